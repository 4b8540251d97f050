"""Batch sharding (issue 11 item 3): `--shard K/N` and `--batch-parallel` split a batch of inputs
between independent processes, every input exactly once, the same split in every process."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from vividcli.cli import app
from vividcli.commands.restore import build_request
from vividcli.config import RestoreOptions
from vividcli.devices import local_rank_device
from vividcli.errors import UsageError
from vividcli.media.probe import probe
from vividcli.runner import Job, plan_jobs, select_shard
from vividcli.testing.media import make_av_mp4

runner = CliRunner()
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def jobs_named(*names: str) -> list[Job]:
    return [Job(Path("in") / name, Path("out") / name) for name in names]


def shards(jobs: list[Job], count: int) -> list[list[Job]]:
    return [select_shard(jobs, index, count) for index in range(1, count + 1)]


# --- the split (pure) -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 12])
@pytest.mark.parametrize("size", [0, 1, 2, 5, 9])
def test_every_job_in_exactly_one_shard_and_sizes_differ_by_at_most_one(size, count):
    jobs = jobs_named(*(f"clip{i:02d}.mp4" for i in range(size)))
    parts = shards(jobs, count)
    taken = [job for part in parts for job in part]
    assert sorted(taken, key=str) == sorted(jobs, key=str)  # all of them, none twice
    sizes = [len(part) for part in parts]
    assert max(sizes) - min(sizes) <= 1
    if count > size:
        assert sizes.count(0) == count - size  # more shards than inputs: the rest are empty


def test_split_does_not_depend_on_the_order_of_the_inputs():
    jobs = jobs_named(*(f"{name}.mp4" for name in ("b", "a", "zz", "c10", "c2", "Z", "é")))
    expected = [set(part) for part in shards(jobs, 3)]
    rng = random.Random(0)
    for _ in range(20):
        shuffled = rng.sample(jobs, len(jobs))
        parts = shards(shuffled, 3)
        assert [set(part) for part in parts] == expected
        assert all(part == [job for job in shuffled if job in part] for part in parts)  # planned order kept


def test_jobs_writing_one_output_stay_in_one_shard():
    # The same name in two folders mirrors onto one output: one process gets both (the second is then skipped).
    jobs = [Job(Path("x/a.mp4"), Path("out/a.mp4")), Job(Path("y/a.mp4"), Path("out/a.mp4")),
            Job(Path("x/b.mp4"), Path("out/b.mp4"))]
    parts = shards(jobs, 2)
    assert sorted(len(part) for part in parts) == [1, 2]
    assert {job.input for part in parts if len(part) == 2 for job in part} == {Path("x/a.mp4"), Path("y/a.mp4")}


def test_bad_shard_numbers_are_refused():
    for index, count in ((0, 2), (3, 2), (1, 0)):
        with pytest.raises(ValueError):
            select_shard([], index, count)


def test_planned_folder_splits_the_same_whatever_exists_and_however_named(tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    for name in ("d.mp4", "a.mp4", "c.mkv", "b.mov", "e.mp4"):
        (folder / name).touch()  # plan_jobs only looks at names
    out = tmp_path / "out"
    before = [select_shard(plan_jobs([folder], f"{out}/"), k, 2) for k in (1, 2)]
    out.mkdir()
    (out / "a.mp4").write_bytes(b"done already")
    (out / "c.mkv").write_bytes(b"done already")
    after = [select_shard(plan_jobs([folder], f"{out}/"), k, 2) for k in (1, 2)]
    assert after == before
    files = sorted(folder.iterdir(), reverse=True)  # the same inputs, named one by one in another order
    by_file = [select_shard(plan_jobs(files, f"{out}/"), k, 2) for k in (1, 2)]
    assert [sorted(part, key=str) for part in by_file] == [sorted(part, key=str) for part in before]


# --- the command line -------------------------------------------------------------------------------------------

@pytest.fixture()
def no_launcher(monkeypatch):
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def restore(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, ["restore", *args], env=env)


@pytest.mark.parametrize("value", ["0/2", "3/2", "1/0", "2", "a/b", "-1/2", "1/2/3", "", "½/2", "²/3"])
def test_bad_shard_is_a_one_line_usage_error(tmp_path, value, no_launcher):
    result = restore("missing.mp4", "-o", str(tmp_path / "o.mp4"), "--shard", value)
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "--shard must be K/N" in result.output


@pytest.mark.parametrize(("args", "env", "needle"), [
    (["--batch-parallel", "--shard", "1/2"], {"RANK": "0", "WORLD_SIZE": "2"}, "either it or --shard"),
    (["--batch-parallel"], {}, "RANK and WORLD_SIZE are not set"),
    (["--batch-parallel"], {"RANK": "0"}, "WORLD_SIZE is not set"),
    (["--batch-parallel"], {"RANK": "2", "WORLD_SIZE": "2"}, "0 <= RANK < WORLD_SIZE"),
    (["--batch-parallel"], {"RANK": "x", "WORLD_SIZE": "2"}, "0 <= RANK < WORLD_SIZE"),
])
def test_batch_parallel_misuse_is_a_one_line_usage_error(tmp_path, args, env, needle, no_launcher):
    result = restore("missing.mp4", "-o", str(tmp_path / "o.mp4"), *args, env=env)
    assert result.exit_code == 2, result.output
    assert result.output.strip().count("\n") == 0 and needle in result.output


def test_empty_shard_exits_0_with_nothing_to_do(tmp_path, no_launcher):
    src = make_av_mp4(tmp_path / "in.mp4", num_frames=2)
    out = tmp_path / "out.mp4"
    result = restore(str(src), "-o", str(out), "--engine", "classic", "--upscale", "1", "--shard", "3/3")
    assert result.exit_code == 0, result.output
    assert "shard 3/3: 0 of 1 inputs: nothing to do" in result.output
    assert not out.exists()
    result = restore(str(src), "-o", str(out), "--engine", "classic", "--upscale", "1", "--shard", "2/3",
                     "--json", "-q")
    report = json.loads(result.stdout)
    assert report == {"results": [], "exit_code": 0, "shard": {"index": 2, "count": 3, "inputs": 0, "of": 1}}
    assert not out.exists()


def build(tmp_path: Path, engine: str, device: str, environ: dict[str, str], **extra):
    src = tmp_path / "in.mp4"
    src.touch()
    return build_request(
        inputs=[src], output=str(tmp_path / "out.mp4"), engine=engine, options=RestoreOptions(), ckpt_dir=None,
        caption=None, captions_file=None, captioner=None, trust_remote_code=False, textfix=False, sr_model=None,
        sr_tile=512, device=device, dtype="auto", offload="auto", weights="bf16", fps=None, environ=environ,
        recursive=False, overwrite=False, codec=None, crf=None, preset=None, pix_fmt=None, save_frames=None,
        no_audio=False, cache_dir=None, no_resume=False, checkpoint_every=1, keep_cache=False, quiet=True,
        json_report=False, **extra)


@pytest.fixture()
def two_gpus(monkeypatch):
    chosen: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    return chosen


def test_local_rank_picks_the_gpu(two_gpus):
    assert local_rank_device("auto", 1) == "cuda:1" and local_rank_device("cuda", 0) == "cuda:0"
    assert two_gpus == [1, 0]  # made current, so current-device allocations go there too
    assert local_rank_device("cpu", 1) == "cpu" and local_rank_device("cuda:0", 1) == "cuda:0"  # asked for
    with pytest.raises(UsageError, match="LOCAL_RANK=2 but this process sees 2 CUDA GPU"):
        local_rank_device("auto", 2)


def test_local_rank_without_cuda_changes_nothing(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert local_rank_device("auto", 3) == "auto"


def test_batch_parallel_request_takes_rank_world_size_and_local_rank(tmp_path, two_gpus):
    environ = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}
    request = build(tmp_path, "realesrgan", "auto", environ, batch_parallel=True)
    assert request.shard == (4, 4) and request.engine.device == "cuda:1" and request.planned == 1
    assert build(tmp_path, "classic", "auto", environ, batch_parallel=True).engine.device == "cpu"  # weight-free
    plain = build(tmp_path, "realesrgan", "auto", environ, shard="1/2")  # --shard alone ignores the launcher
    assert plain.shard == (1, 2) and plain.engine.device == "auto" and len(plain.jobs) == 1
    with pytest.raises(UsageError, match="LOCAL_RANK must be a whole number"):
        build(tmp_path, "realesrgan", "auto", {**environ, "LOCAL_RANK": "one"}, batch_parallel=True)


# --- real processes ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    for name in ("d.mp4", "b.mp4", "a.mp4", "c.mp4"):
        make_av_mp4(folder / name, num_frames=3)
    return folder


def run_side_by_side(clips: Path, out: Path, per_process: list[tuple[list[str], dict[str, str]]]) -> list[dict]:
    """Start every process at once (same command line but for the arguments/environment given), wait for all."""
    base = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    command = [sys.executable, "-m", "vividcli", "restore", str(clips), "-o", f"{out}/", "--engine", "classic",
               "--upscale", "1", "--json", "-q"]
    processes = [subprocess.Popen(command + args, env={**base, **env}, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for args, env in per_process]
    reports = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        reports.append(json.loads(stdout))
    return reports


def check_each_output_written_once(clips: Path, out: Path, reports: list[dict]) -> None:
    written = [Path(r["output"]).name for report in reports for r in report["results"]]
    assert [r["status"] for report in reports for r in report["results"]] == ["done"] * 4  # nothing skipped
    assert sorted(written) == ["a.mp4", "b.mp4", "c.mp4", "d.mp4"]  # each output by exactly one process
    assert [len(report["results"]) for report in reports] == [2, 2]
    assert sorted(p.name for p in out.iterdir()) == sorted(written)  # no leftovers
    assert all(probe(out / name).num_frames == 3 for name in written)


def test_two_processes_with_shard_write_every_output_once(clips, tmp_path):
    out = tmp_path / "out"
    reports = run_side_by_side(clips, out, [(["--shard", "1/2"], {}), (["--shard", "2/2"], {})])
    check_each_output_written_once(clips, out, reports)
    assert [report["shard"] for report in reports] == [{"index": k, "count": 2, "inputs": 2, "of": 4} for k in (1, 2)]
    # Sorted outputs dealt in turn: a, c to shard 1; b, d to shard 2.
    assert [[Path(r["input"]).name for r in report["results"]] for report in reports] == [["a.mp4", "c.mp4"],
                                                                                         ["b.mp4", "d.mp4"]]


def test_two_processes_with_batch_parallel_write_every_output_once(clips, tmp_path):
    out = tmp_path / "out"
    launcher = [{"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank)} for rank in (0, 1)]
    reports = run_side_by_side(clips, out, [(["--batch-parallel"], env) for env in launcher])
    check_each_output_written_once(clips, out, reports)
    assert [report["shard"]["index"] for report in reports] == [1, 2]
