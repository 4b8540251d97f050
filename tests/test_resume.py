"""Never lose work: `vividvr restore` killed at any moment resumes, with bit-identical output.

End to end on a tiny random checkpoint: a 17-frame 48x32 PNG sequence restored at scale 1 with
4-latent tiles (2 tiles) and 9-frame clips (3 temporal clips), 8 steps, on the CPU in float32,
into a PNG folder (lossless, so equality is meaningful). Progress is detected from the job cache
itself (the `state` entry's manifest, `entries/state.json`, whose meta holds the step), never by
sleeping blindly.

Runs: the reference is a real `python -m vividcli restore` subprocess; every other run is a child
forked from a warm server (`resume_child.py`) because imports alone take longer than a run here.
All runs use OMP_NUM_THREADS=1 (the same numerics everywhere, and much faster on this loaded
2-core machine than threads fighting over the cores).

Every child logs its VAE-encoder and T5 calls (`resume_child.ENCODER_SPY_LINE`): a resumed run
must make none (it loads each clip's cached conditioning), a run that recomputes must make them.
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.forkserver
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from vividcli.cli import app
from vividcli.testing import resume_child
from vividcli.testing.media import make_png_sequence

pytestmark = pytest.mark.slow

STEPS = 8
FRAMES, WIDTH, HEIGHT = 17, 48, 32
RUN_TIMEOUT_S = 400  # one run, model loading included, on a heavily loaded machine
RESUME_MESSAGE = "run the same command again to resume"
CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
INTERRUPTED_LOGS: dict[str, str] = {}  # output of the SIGTERM/SIGINT runs, for the message check


def restore_args(src: Path, out: Path, ckpt: Path, cache: Path, *extra: str) -> list[str]:
    return ["restore", str(src), "-o", str(out), "--engine", "vivid", "--ckpt-dir", str(ckpt),
            "--upscale", "1", "--tile-size", "4", "--clip-frames", "9", "--steps", str(STEPS),
            "--seed", "7", "--caption", "an old film", "--device", "cpu", "--dtype", "float32",
            "--cache-dir", str(cache), *extra]


# ------------------------------------------------------------------------------------ helpers


def read_frames(folder: Path) -> tuple[list[str], np.ndarray]:
    from PIL import Image

    names = sorted(p.name for p in folder.iterdir())
    return names, np.stack([np.asarray(Image.open(folder / n)) for n in names])


def job_dirs(cache: Path) -> list[Path]:
    return sorted(d for d in (cache / "jobs").glob("*") if d.is_dir()) if (cache / "jobs").is_dir() else []


def the_job(cache: Path) -> Path:
    jobs = job_dirs(cache)
    assert len(jobs) == 1, f"expected one cached job under {cache}, found {jobs}"
    return jobs[0]


def state_record(cache: Path) -> dict | None:
    """The manifest record of the job's denoising state (None while there is none)."""
    for job in job_dirs(cache):
        try:
            return json.loads((job / "entries" / "state.json").read_bytes())
        except FileNotFoundError:
            pass
    return None


def state_step(cache: Path) -> int:
    record = state_record(cache)
    return 0 if record is None else int(record["meta"]["step"])


def job_info(cache: Path) -> dict:
    return json.loads((the_job(cache) / "job.json").read_bytes())


def encoder_calls(run: Child) -> int:
    """How many VAE-encode and T5 calls this run made (logged by resume_child's spies)."""
    return run.output().count(resume_child.ENCODER_SPY_LINE)


def cache_cli(*args: str):
    result = CliRunner().invoke(app, ["cache", *args])
    assert result.exit_code == 0, result.output
    return result.output


def check_target_after_kill(out: Path, reference: Reference) -> bool:
    """After a kill the target is absent, or (killed after the commit) complete and exact."""
    if not out.exists():
        assert not out.is_symlink()
        return False
    assert read_frames(out)[0] == reference.names, f"half-written output at {out}"
    assert np.array_equal(read_frames(out)[1], reference.frames), f"wrong output at {out}"
    return True


def assert_only_hidden_debris(folder: Path, target: Path) -> list[str]:
    """Beside the target there may only be hidden temporaries (`.name.partial-*`) of killed runs."""
    others = [p.name for p in folder.iterdir() if p != target]
    assert all(n.startswith(f".{target.name}.partial-") for n in others), others
    return others


@dataclass
class Child:
    """One `vividvr` run forked from the warm server."""

    process: multiprocessing.Process
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def describe(self) -> str:
        return f"run pid {self.pid} (exit code {self.process.exitcode}); its output:\n{self.output()}"

    def wait(self, timeout: float = RUN_TIMEOUT_S) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join(30)
            pytest.fail(f"run did not finish within {timeout} s; {self.describe()}")
        return self.process.exitcode

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait_for_step(self, cache: Path, above: int, target: Path, timeout: float = RUN_TIMEOUT_S) -> int:
        """Block until this run has saved a state past step `above`; returns that step.

        Meanwhile the output `target` must not appear (it can only once denoising is over).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert not target.exists(), f"{target} appeared during denoising; {self.describe()}"
            step = state_step(cache)
            if step > above:
                return step
            if not self.process.is_alive():
                self.process.join()
                pytest.fail(f"the run ended before saving a step past {above}; {self.describe()}")
            time.sleep(0.02)
        self.process.kill()
        pytest.fail(f"no step past {above} saved within {timeout} s; {self.describe()}")


class Reference:
    """The uninterrupted run: the real `python -m vividcli restore` in a fresh interpreter.

    Started by the fixture and collected on first use, so that its imports overlap with the forked
    runs of the first test.
    """

    def __init__(self, src: Path, out: Path, ckpt: Path, cache: Path):
        self.out, self.cache = out, cache
        env = {**os.environ, **CHILD_ENV}
        env.pop("VIVIDVR_CACHE_DIR", None)
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "vividcli", *restore_args(src, out, ckpt, cache)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        self._frames: tuple[list[str], np.ndarray] | None = None

    def collect(self) -> tuple[list[str], np.ndarray]:
        if self._frames is None:
            try:
                output = self.proc.communicate(timeout=RUN_TIMEOUT_S)[0].decode(errors="replace")
            except subprocess.TimeoutExpired:
                self.proc.kill()
                output = self.proc.communicate()[0].decode(errors="replace")
                pytest.fail(f"the reference run took over {RUN_TIMEOUT_S} s:\n{output}")
            elapsed = time.monotonic() - self.started
            assert self.proc.returncode == 0, f"the reference run failed (exit {self.proc.returncode}):\n{output}"
            print(f"\n[test_resume] reference run (`python -m vividcli restore` subprocess, imports included, "
                  f"concurrent with other runs): {elapsed:.1f} s")
            names, frames = read_frames(self.out)
            assert len(names) == FRAMES and frames.shape == (FRAMES, HEIGHT, WIDTH, 3)
            self._frames = names, frames
        return self._frames

    @property
    def names(self) -> list[str]:
        return self.collect()[0]

    @property
    def frames(self) -> np.ndarray:
        return self.collect()[1]


@dataclass
class Setup:
    src: Path
    ckpt: Path
    reference: Reference
    spawn: object  # (argv, name, fault=None) -> Child

    def args(self, out: Path, cache: Path, *extra: str) -> list[str]:
        return restore_args(self.src, out, self.ckpt, cache, *extra)


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def forkserver():
    """A multiprocessing context whose forkserver has imported torch, diffusers and vividcli."""
    if multiprocessing.forkserver._forkserver._forkserver_pid is not None:
        pytest.skip("a forkserver is already running in this process (its environment is unknown)")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(resume_child.PRELOAD)
    with pytest.MonkeyPatch.context() as mp:  # the server (and so every child) inherits these
        for k, v in CHILD_ENV.items():
            mp.setenv(k, v)
        mp.delenv("VIVIDVR_CACHE_DIR", raising=False)
        multiprocessing.forkserver.ensure_running()  # returns at once; the server imports meanwhile
    yield ctx
    multiprocessing.forkserver._forkserver._stop()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, forkserver):
    root = tmp_path_factory.mktemp("resume")
    logs = root / "logs"
    logs.mkdir()
    counter = iter(range(1000))

    def spawn(argv: list[str], name: str, fault: str | None = None) -> Child:
        log = logs / f"{next(counter):02d}-{name}.log"
        p = forkserver.Process(target=resume_child.run_cli, args=(argv, str(log), fault), daemon=True)
        p.start()
        return Child(p, log)

    src = root / "in"
    make_png_sequence(src, num_frames=FRAMES, mode="RGB", width=WIDTH, height=HEIGHT, digits=3)
    # The checkpoint, written by a forked child (once the server has imported everything).
    ckpt = root / "ckpt"
    t0 = time.monotonic()
    p = forkserver.Process(target=resume_child.write_checkpoint, args=(str(ckpt),))
    p.start()
    p.join(600)
    assert p.exitcode == 0, f"writing the tiny checkpoint failed (exit {p.exitcode})"
    print(f"\n[test_resume] forkserver imports + tiny checkpoint: {time.monotonic() - t0:.1f} s")
    reference = Reference(src, root / "reference" / "out", ckpt, root / "reference-cache")
    yield Setup(src, ckpt, reference, spawn)
    if reference.proc.poll() is None:
        reference.proc.kill()
        reference.proc.wait()


def assert_same_as_reference(out: Path, setup: Setup, context: str) -> None:
    names, frames = read_frames(out)
    assert names == setup.reference.names, context
    ref = setup.reference.frames
    diff = np.abs(frames.astype(int) - ref.astype(int))
    assert np.array_equal(frames, ref), (
        f"output differs from the uninterrupted reference in {np.count_nonzero(diff.any(-1))} pixels "
        f"(max difference {diff.max()}); {context}")


# ------------------------------------------------------------------------------------ tests


def test_sigkill_at_random_points_resumes_bit_identically(setup, tmp_path):
    rng = random.Random(1234)
    cache, out = tmp_path / "cache", tmp_path / "outs" / "out"
    out.parent.mkdir()
    runs: list[Child] = []
    killed_at: list[int] = []
    step_s = None
    t0 = time.monotonic()
    while len(killed_at) < 3:
        before = state_step(cache)
        run = setup.spawn(setup.args(out, cache), f"kill{len(killed_at)}")
        runs.append(run)
        step = run.wait_for_step(cache, before, out)  # denoising has started: this run saved a new step
        if step_s is None:  # measure one step, to spread the kill points over a step and beyond
            t_step = time.monotonic()
            step = run.wait_for_step(cache, step, out)
            step_s = time.monotonic() - t_step
        time.sleep(rng.uniform(0.0, 1.3) * step_s)
        run.process.kill()
        assert run.wait(60) == -signal.SIGKILL, run.describe()
        killed_at.append(state_step(cache))
        assert killed_at[-1] >= step, "a saved state went backwards"
        if len(killed_at) == 1:  # a killed run shows as interrupted, at its last saved step
            listing = cache_cli("ls", "--cache-dir", str(cache))
            assert "interrupted" in listing and f"step {killed_at[0]}/{STEPS}" in listing, listing
        if check_target_after_kill(out, setup.reference):
            break  # killed after the output was committed: nothing left to resume
    else:
        final = setup.spawn(setup.args(out, cache), "final")
        runs.append(final)
        assert final.wait() == 0, final.describe()
    elapsed = time.monotonic() - t0
    assert_same_as_reference(out, setup, f"killed after saved steps {killed_at}")
    # Every run after a kill resumed from the state the kill left (at most the step in flight lost),
    # with the cached conditioning: no VAE encode, no T5.
    assert encoder_calls(runs[0]) > 0, "the encoder spies saw nothing; " + runs[0].describe()
    for run, step in zip(runs[1:], killed_at):
        assert f"resuming at step {step}/{STEPS}" in run.output(), f"expected a resume at step {step}; " + run.describe()
        assert encoder_calls(run) == 0, "a resumed run encoded again; " + run.describe()
    debris = assert_only_hidden_debris(out.parent, out)
    info = job_info(cache)
    assert info["status"] == "done" and info["progress"] == {"step": STEPS, "steps": STEPS}, info
    print(f"\n[test_resume] SIGKILL after saved steps {killed_at} (~{step_s:.2f} s/step), {len(runs)} runs "
          f"in {elapsed:.1f} s; hidden partial outputs left by the kills: {len(debris)}")


def test_truncated_state_is_detected_and_recomputed(setup, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "out"
    run = setup.spawn(setup.args(out, cache), "truncate-kill")
    run.wait_for_step(cache, 1, out)  # at least 2 steps saved
    run.process.kill()
    run.wait(60)
    assert not out.exists()
    record = state_record(cache)
    data = the_job(cache) / "entries" / record["file"]
    assert data.stat().st_size == record["size"] > 100
    os.truncate(data, record["size"] // 2)
    rerun = setup.spawn(setup.args(out, cache), "truncate-rerun")
    assert rerun.wait() == 0, rerun.describe()
    log = rerun.output()
    assert "'state'" in log and "truncated" in log and "recomputed" in log, rerun.describe()
    assert "resuming at step" not in log, rerun.describe()
    assert encoder_calls(rerun) > 0, rerun.describe()  # no state: the initial noise needs the encode draws
    assert_same_as_reference(out, setup, "after a truncated state file")


def test_corrupt_conditioning_is_detected_and_recomputed(setup, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "out"
    run = setup.spawn(setup.args(out, cache), "conditioning-kill")
    run.wait_for_step(cache, 0, out)
    run.process.kill()
    run.wait(60)
    assert not out.exists()
    step = state_step(cache)
    entries = the_job(cache) / "entries"
    record = json.loads((entries / "conditioning-clip0001.json").read_bytes())
    data = entries / record["file"]
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one flipped bit, same size: only the hash can tell
    data.write_bytes(bytes(raw))
    rerun = setup.spawn(setup.args(out, cache), "conditioning-rerun")
    assert rerun.wait() == 0, rerun.describe()
    log = rerun.output()
    assert "'conditioning-clip0001'" in log and "corrupt" in log and "recomputed" in log, rerun.describe()
    assert f"resuming at step {step}/{STEPS}" in log, rerun.describe()  # the state is kept
    assert encoder_calls(rerun) > 0, rerun.describe()  # every clip encoded again
    assert_same_as_reference(out, setup, f"after a corrupt conditioning entry (killed after step {step})")


def test_sigterm_and_sigint_stop_at_a_safe_point_and_resume(setup, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "out"
    stopped_at = 0
    for signum, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        run = setup.spawn(setup.args(out, cache), signal.Signals(signum).name)
        step = run.wait_for_step(cache, stopped_at, out)
        assert step < STEPS - 1, "too late to test a stop during denoising; raise STEPS"
        run.signal(signum)
        in_flight = state_step(cache) + 1
        assert run.wait() == code, run.describe()
        log = INTERRUPTED_LOGS[signal.Signals(signum).name] = run.output()
        if stopped_at:
            assert f"resuming at step {stopped_at}/{STEPS}" in log, run.describe()
            assert encoder_calls(run) == 0, run.describe()
        stopped_at = state_step(cache)
        assert step <= stopped_at <= in_flight, run.describe()  # it stops after the step in flight
        assert RESUME_MESSAGE in log, run.describe()
        assert "Traceback" not in log, run.describe()
        assert not out.exists() and not list(tmp_path.glob(".out.partial-*")), run.describe()
        info = job_info(cache)
        assert info["status"] == "interrupted", info
        assert info["progress"] == {"step": stopped_at, "steps": STEPS}, info
    # --keep-cache does not change the numbers, so the job (and its saved state) is the same one.
    final = setup.spawn(setup.args(out, cache, "--keep-cache"), "signals-final")
    assert final.wait() == 0, final.describe()
    assert f"resuming at step {stopped_at}/{STEPS}" in final.output(), final.describe()
    assert encoder_calls(final) == 0, final.describe()
    assert_same_as_reference(out, setup, "after SIGTERM and SIGINT")
    assert job_info(cache)["status"] == "done"
    entries = the_job(cache) / "entries"
    assert json.loads((entries / "state.json").read_bytes())["meta"]["step"] == STEPS  # kept: --keep-cache
    kept = sorted(p.name for p in entries.glob("conditioning-clip*.json"))
    assert kept == [f"conditioning-clip{i:04d}.json" for i in range(3)], kept


def test_interrupted_run_prints_one_line_on_how_to_resume():
    if not INTERRUPTED_LOGS:
        pytest.skip("needs the output of test_sigterm_and_sigint_stop_at_a_safe_point_and_resume")
    for name, log in INTERRUPTED_LOGS.items():
        lines = [ln for ln in log.splitlines() if RESUME_MESSAGE in ln]
        assert len(lines) == 1, f"{name}: {lines}"


def test_crash_just_before_the_output_is_committed_loses_no_work(setup, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "out"
    run = setup.spawn(setup.args(out, cache), "commit-crash", fault="exit-before-commit")
    assert run.wait() == 99, run.describe()
    assert not out.exists()
    assert job_info(cache)["status"] != "done", "job.json says done, but there is no output"
    rerun = setup.spawn(setup.args(out, cache), "commit-crash-rerun")
    assert rerun.wait() == 0, rerun.describe()
    assert_same_as_reference(out, setup, "after a crash at the commit")
    assert f"resuming at step {STEPS}/{STEPS}" in rerun.output(), rerun.describe()
    assert encoder_calls(rerun) == 0, rerun.describe()


def test_cache_ls_and_clean_of_a_finished_job(setup, tmp_path):
    setup.reference.collect()
    cache = setup.reference.cache
    job = the_job(cache)
    info = job_info(cache)
    assert info["status"] == "done"
    listing = cache_cli("ls", "--cache-dir", str(cache))
    line = next((ln for ln in listing.splitlines() if ln.startswith(job.name[:12])), None)
    assert line is not None, listing
    assert "done" in line and f"step {STEPS}/{STEPS}" in line and str(setup.src) in line, line
    # Finished without --keep-cache: the bulky state is gone, the JSON description stays.
    entries = [json.loads(p.read_bytes()) for p in (job / "entries").glob("*.json")]
    assert not [e for e in entries if e["kind"] != "json"], entries
    assert not list((job / "entries").glob("*.safetensors"))
    result = cache_cli("clean", "--cache-dir", str(cache), "--job", job.name[:12])
    assert "removed 1 job(s)" in result, result
    assert not job.exists() and job_dirs(cache) == []
    assert cache_cli("ls", "--cache-dir", str(cache)).strip() == ""
