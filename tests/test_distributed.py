"""Step-parallel restoration (docs/distributed.md): real gloo process groups on the CPU.

Two ranks sample the tiny checkpoint bit-identically to one process, each running ceil(calls / 2)
model calls a step at most; through torchrun and the CLI, golden cases c and d come out byte for
byte as from one process; a rank killed mid-run ends the job without output and the same command
resumes it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from test_golden_pipeline import Case, psnr
from vividcli.errors import UsageError
from vividcli.parallel import StepGroup, launcher_world

PYTHON = sys.executable
BIN = Path(sys.executable).parent
LAUNCHER = {"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_thread_env(**extra: str) -> dict[str, str]:
    """Every process computes with one thread (torchrun's default), so a rank and one process agree."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def test_launcher_world_reads_the_standard_variables():
    assert launcher_world({}) is None and launcher_world({"WORLD_SIZE": "1", "RANK": "0"}) is None
    assert launcher_world(LAUNCHER) == (1, 2)
    with pytest.raises(UsageError, match="MASTER_ADDR, MASTER_PORT are not set"):
        launcher_world({"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(UsageError, match="0 <= RANK < WORLD_SIZE"):
        launcher_world({**LAUNCHER, "RANK": "2"})


@pytest.mark.parametrize("units, world", [(9, 2), (9, 4), (3, 8), (12, 3)])
def test_calls_are_dealt_round_robin_ceil_per_rank(units, world):
    counts = [sum(StepGroup(r, world, torch.device("cpu")).owner(u) == r for u in range(units)) for r in range(world)]
    assert sum(counts) == units and max(counts) == -(-units // world) and max(counts) - min(counts) <= 1


@pytest.mark.slow
def test_two_ranks_sample_bit_identically_with_ceil_calls_each(tiny_ckpt_dir, tmp_path):
    module = ["-m", "vividcli.testing.step_parallel", str(tiny_ckpt_dir)]
    port = str(free_port())
    ranks = [subprocess.Popen([PYTHON, *module, str(tmp_path / f"rank{r}.pt"), str(r), "2", port], env=one_thread_env())
             for r in range(2)]
    single = subprocess.run([PYTHON, *module, str(tmp_path / "single.pt")], env=one_thread_env(), capture_output=True)
    assert single.returncode == 0, single.stderr.decode()[-2000:]
    assert [p.wait(timeout=600) for p in ranks] == [0, 0]
    expected = torch.load(tmp_path / "single.pt", weights_only=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert expected["units"] == 9 and expected["calls"] == [9, 9, 9]
    assert [r["calls"] for r in results] == [[5, 5, 5], [4, 4, 4]]  # ceil(9 / 2) and the rest, every step
    for result in results:
        for ours, theirs in zip(result["latents"], expected["latents"], strict=True):
            assert torch.equal(ours, theirs)


def write_frames(folder: Path, frames: np.ndarray) -> Path:
    folder.mkdir(parents=True)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{i:04d}.png")
    return folder


def restore_command(inputs: list[Path], out: Path, ckpt: Path, cache: Path, *args: str, ranks: int = 1) -> list[str]:
    vividvr = [str(BIN / "vividvr")]
    if ranks > 1:
        vividvr = [str(BIN / "torchrun"), "--nproc-per-node", str(ranks), "--master-port", str(free_port()),
                   "--no-python", *vividvr]
    return [*vividvr, "restore", *map(str, inputs), "-o", str(out), "--ckpt-dir", str(ckpt), "--cache-dir", str(cache),
            "--quiet", *args]


def read_pngs(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(folder.glob("*.png"))]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["case_c_whole_video", "case_d_temporal_aggregation"])
def test_torchrun_output_is_byte_identical_to_one_process(reference_dir, reference_ckpt_dir, tmp_path, name):
    case = Case(reference_dir, name)
    frames = write_frames(tmp_path / "input", case.input)
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps(case.captions))
    args = ["--captions-file", str(captions), *case.cli_args()]
    outputs = {}
    for ranks in (1, 2):
        out = tmp_path / f"out{ranks}"
        done = subprocess.run(restore_command([frames], out, reference_ckpt_dir, tmp_path / f"cache{ranks}", *args,
                                              ranks=ranks), env=one_thread_env(), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs[ranks] = read_pngs(out)
    assert len(outputs[1]) == case.input.shape[0] and outputs[2] == outputs[1]
    ours = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted((tmp_path / "out2").glob("*.png"))])
    assert psnr(ours, case.expected) >= 50  # the golden criterion still holds


def pid_of_rank(command_marker: str, rank: int) -> int | None:
    """The pid of the vividvr process with RANK=rank whose command line holds `command_marker`."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if command_marker in cmdline and "torchrun" not in cmdline and f"RANK={rank}".encode() in environ:
            return int(proc.name)
    return None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the ranks through /proc")
def test_killed_rank_leaves_no_output_and_the_same_command_resumes(tiny_ckpt_dir, tmp_path):
    rng = np.random.default_rng(11)
    inputs = [write_frames(tmp_path / "in" / name, rng.integers(0, 256, (17, 32, 48, 3), dtype=np.uint8))
              for name in ("first", "second")]
    args = ["--upscale", "1", "--tile-size", "4", "--clip-frames", "9", "--steps", "30", "--device", "cpu",
            "--dtype", "float32", "--caption", "a clip", "--json"]
    single = subprocess.run(restore_command(inputs, tmp_path / "single", tiny_ckpt_dir, tmp_path / "c1", *args),
                            env=one_thread_env(), capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-3000:]
    out, cache = tmp_path / "parallel", tmp_path / "c2"
    command = restore_command(inputs, out, tiny_ckpt_dir, cache, *args, ranks=2)
    job = subprocess.Popen(command, env=one_thread_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(cache.rglob("state.*.safetensors")) and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    worker = pid_of_rank(str(out), 1)
    assert worker is not None and job.poll() is None, "the job ended before a step was saved"
    os.kill(worker, signal.SIGKILL)
    stdout, stderr = job.communicate(timeout=300)
    assert job.returncode != 0
    assert "error: rank 0: lost another rank" in stderr  # the leader says what happened, in one line
    assert not out.exists() or not any(out.rglob("*.png"))  # nothing half-written
    loud = [arg for arg in command if arg != "--quiet"]
    again = subprocess.run(loud, env=one_thread_env(), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming at step" in again.stderr and "rank 1" not in again.stderr
    report = json.loads(again.stdout)  # one report (rank 0's), not one per rank
    assert [r["status"] for r in report["results"]] == ["done", "done"]
    for name in ("first", "second"):
        assert read_pngs(out / name) == read_pngs(tmp_path / "single" / name)


def test_missing_rendezvous_variables_are_a_one_line_usage_error(tiny_ckpt_dir, tmp_path):
    from typer.testing import CliRunner

    from vividcli.cli import app

    env = {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "", "MASTER_PORT": ""}
    result = CliRunner().invoke(app, ["restore", str(tmp_path), "-o", str(tmp_path / "o.mp4"), "--ckpt-dir",
                                      str(tiny_ckpt_dir)], env=env)
    assert result.exit_code == 2, result.output
    assert result.output.strip().count("\n") == 0 and "MASTER_ADDR, MASTER_PORT are not set" in result.output


def test_a_failing_worker_says_so_in_one_line_naming_its_rank(tiny_ckpt_dir, tmp_path, monkeypatch):
    """The worker's error path (what a worker prints and returns), without a second process."""
    from typer.testing import CliRunner

    import vividcli.commands.restore as restore_command_module
    from vividcli.cli import app
    from vividcli.errors import CheckpointError

    left = []
    group = StepGroup(1, 2, torch.device("cpu"))
    monkeypatch.setattr(group, "finish", lambda: left.append(True))
    monkeypatch.setattr(restore_command_module, "join_group", lambda rank, world, device: group)

    def broken_worker(spec):
        assert spec.group is group
        raise CheckpointError("transformer weights are damaged")

    monkeypatch.setattr(restore_command_module, "serve_as_worker", broken_worker)
    frames = write_frames(tmp_path / "in", np.zeros((3, 16, 16, 3), dtype=np.uint8))
    result = CliRunner().invoke(app, ["restore", str(frames), "-o", str(tmp_path / "out"), "--ckpt-dir",
                                      str(tiny_ckpt_dir), "--device", "cpu", "--json"], env={**LAUNCHER})
    assert result.exit_code == 1
    assert result.output.strip() == "error: rank 1: transformer weights are damaged"  # no JSON from a worker
    assert left == [True] and not (tmp_path / "out").exists()
