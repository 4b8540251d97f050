"""Cache store: identities, keys, verified entries, crash safety, locking, housekeeping."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from vividcli.cache import store
from vividcli.cache.housekeeping import clean, disk_usage, list_jobs
from vividcli.cache.lock import JobLock, probe_lock
from vividcli.cache.store import (
    JobCache,
    JobInfo,
    cache_root,
    checkpoint_identity,
    input_identity,
    job_key,
    load_state,
    save_state,
)
from vividcli.errors import UsageError, VividError

posix_only = pytest.mark.skipif(os.name != "posix", reason="needs flock, fork and SIGKILL")

# ---------------------------------------------------------------- identities and keys


def test_cache_root_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIVIDVR_CACHE_DIR", str(tmp_path / "env"))
    assert cache_root(tmp_path / "cli") == tmp_path / "cli"
    assert cache_root(None) == tmp_path / "env"
    monkeypatch.delenv("VIVIDVR_CACHE_DIR")
    assert cache_root(None).name.lower() == "vividvr"


def test_input_identity_file(tmp_path: Path) -> None:
    f = tmp_path / "in.mp4"
    f.write_bytes(os.urandom(3 << 20))
    ident = input_identity(f)
    assert ident == input_identity(f) and len(ident) == 64
    assert input_identity(f.rename(tmp_path / "renamed.mp4")) == ident  # the path is not part
    f = tmp_path / "renamed.mp4"
    st = f.stat()
    data = bytearray(f.read_bytes())
    data[-1] ^= 1  # same size, same mtime, last byte changed: the tail hash sees it
    f.write_bytes(bytes(data))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert input_identity(f) != ident
    with pytest.raises(VividError, match="input not found"):
        input_identity(tmp_path / "missing.mp4")


def test_input_identity_folder(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"{i:04d}.png").write_bytes(b"x" * (i + 1))
    ident = input_identity(tmp_path)
    (tmp_path / ".DS_Store").write_bytes(b"junk")  # hidden files are not frames
    assert input_identity(tmp_path) == ident
    (tmp_path / "0001.png").write_bytes(b"yy!")
    assert input_identity(tmp_path) != ident


def test_checkpoint_identity(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "w.safetensors").write_bytes(b"abc")
    ident = checkpoint_identity(tmp_path)
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "meta").write_text("download metadata")
    assert checkpoint_identity(tmp_path) == ident
    (tmp_path / "config.json").write_text("{}")
    assert checkpoint_identity(tmp_path) != ident
    with pytest.raises(VividError):
        checkpoint_identity(tmp_path / "nope")


def test_job_key() -> None:
    opts = {"steps": 50, "cfg": 6.0, "seed": 42, "tile": [512, 512], "dtype": "bf16"}
    base = job_key(input_id="i", checkpoint_id="c", options=opts, format_version=1)
    reordered = dict(reversed(list(opts.items())))
    assert job_key(input_id="i", checkpoint_id="c", options=reordered, format_version=1) == base
    changed = [{**opts, "steps": 51}, {**opts, "cfg": 6.5}, {**opts, "seed": 43},
               {**opts, "tile": [512, 256]}, {**opts, "dtype": "fp16"}, {**opts, "new": None}]
    keys = {job_key(input_id="i", checkpoint_id="c", options=o, format_version=1)
            for o in changed}
    keys |= {job_key(input_id="j", checkpoint_id="c", options=opts, format_version=1),
             job_key(input_id="i", checkpoint_id="d", options=opts, format_version=1),
             job_key(input_id="i", checkpoint_id="c", options=opts, format_version=2)}
    assert len(keys) == 9 and base not in keys
    with pytest.raises(TypeError, match="plain JSON"):
        job_key(input_id="i", checkpoint_id="c", options={"p": Path("x")}, format_version=1)


# ---------------------------------------------------------------- entries


@pytest.fixture()
def cache(tmp_path: Path) -> JobCache:
    return JobCache.open(tmp_path, "k" * 64)


def _files(cache: JobCache) -> list[str]:
    return sorted(p.name for p in cache.entries_dir.iterdir())


def test_round_trips(cache: JobCache) -> None:
    tensors = {"lat": torch.randn(2, 3, 4), "bf": torch.randn(5).bfloat16(),
               "idx": torch.arange(7), "t": torch.randn(4, 4).t(),  # non-contiguous input
               "step": torch.tensor(12), "u8": torch.ByteTensor([1, 2])}
    cache.put_tensors("clip-0001", tensors, meta={"frames": [0, 121]})
    got = cache.get_tensors("clip-0001")
    assert got is not None and got[1] == {"frames": [0, 121]}
    assert got[0].keys() == tensors.keys()
    assert all(torch.equal(got[0][k], tensors[k]) for k in tensors)
    cache.put_json("plan", {"clips": 3, "fps": [30000, 1001]})
    assert cache.get_json("plan") == {"clips": 3, "fps": [30000, 1001]}
    cache.put_bytes("blob", b"\x00\x01")
    assert cache.get_bytes("blob") == b"\x00\x01"
    assert cache.has("plan") and not cache.has("other") and cache.get_json("other") is None
    assert [e.name for e in cache.entries()] == ["blob", "clip-0001", "plan"]
    with pytest.raises(ValueError, match="holds json"):
        cache.get_tensors("plan")
    with pytest.raises(ValueError, match="entry names"):
        cache.put_json("../evil", 1)
    assert cache.delete("blob") and not cache.delete("blob") and not cache.has("blob")


def test_overwrite_keeps_one_data_file(cache: JobCache) -> None:
    cache.put_json("plan", 1)
    cache.put_json("plan", 2)
    cache.put_json("plan", 2)  # same content, same file name: must not delete itself
    assert cache.get_json("plan") == 2
    assert len([f for f in _files(cache) if f.startswith("plan.")]) == 2  # sidecar + data


@pytest.mark.parametrize("damage", ["truncate", "flip", "missing", "sidecar", "not-a-record"])
def test_damaged_entry_is_dropped(cache: JobCache, damage: str,
                                  caplog: pytest.LogCaptureFixture) -> None:
    cache.put_tensors("lat", {"x": torch.randn(64, 64)})
    info = cache.entries()[0]
    data = cache.entries_dir / info.file
    raw = data.read_bytes()
    if damage == "truncate":
        data.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":
        data.write_bytes(raw[:-7] + bytes([raw[-7] ^ 0x10]) + raw[-6:])
    elif damage == "missing":
        data.unlink()
    elif damage == "not-a-record":
        (cache.entries_dir / "lat.json").write_text("[1, 2]")
    else:
        side = cache.entries_dir / "lat.json"
        side.write_text(side.read_text().replace('"size": ', '"size": 1'))
    problems: list[str] = []
    damaged = JobCache(cache.dir, on_problem=problems.append)
    assert damaged.get_tensors("lat") is None
    assert len(problems) == 1 and "dropped" in problems[0] and "dropped" in caplog.text
    if damage == "truncate":
        assert "truncated" in problems[0]
    assert not damaged.has("lat") and damaged.get_tensors("lat") is None and len(problems) == 1
    damaged.sweep()
    assert _files(damaged) == []


def test_drop_bulky_and_sweep(cache: JobCache) -> None:
    cache.put_tensors("a", {"x": torch.zeros(10)})
    cache.put_tensors("b", {"x": torch.ones(10)})
    cache.put_bytes("c", b"123")
    cache.put_json("summary", {"ok": True})
    (cache.entries_dir / ".tmp-a-1-dead").write_bytes(b"left by a kill")
    (cache.entries_dir / "a.0123456789abcdef.safetensors").write_bytes(b"orphan")
    (cache.dir / ".tmp-job.json-1-dead").write_bytes(b"left by a kill")
    freed = cache.drop_bulky(keep=["b"])
    assert freed > 0
    assert [e.name for e in cache.entries()] == ["b", "summary"]
    assert len(_files(cache)) == 4
    assert sorted(p.name for p in cache.dir.iterdir()) == ["entries"]


def test_job_info(cache: JobCache) -> None:
    assert cache.read_info() is None
    first = cache.write_info(JobInfo(input="/v/in.mp4", output="/v/out.mp4", options={"s": 1}))
    assert first.key == cache.key and first.created == first.updated
    after = cache.update_info(status="done", progress={"step": 50, "steps": 50})
    assert cache.read_info() == after and after.created == first.created
    resumed = cache.write_info(JobInfo(input="/v/in.mp4", output="/v/out.mp4", options={}))
    assert resumed.created == first.created and resumed.status == "running"
    with pytest.raises(ValueError):
        cache.update_info(status="weird")


# ---------------------------------------------------------------- crash safety of the state


def _state(step: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    # ~1 MiB, so kills often land inside a write; every value is derived from `step`
    tensors = {"latents": torch.full((256, 1024), float(step)), "t": torch.tensor([step])}
    return tensors, torch.Generator().manual_seed(step).get_state()


def _assert_consistent(got: tuple[dict[str, torch.Tensor], int, torch.Tensor]) -> int:
    tensors, step, rng = got
    expected, expected_rng = _state(step)
    assert tensors.keys() == expected.keys()
    assert all(torch.equal(tensors[k], expected[k]) for k in expected)
    assert torch.equal(rng, expected_rng)
    return step


def _save(cache: JobCache, step: int) -> None:
    tensors, rng = _state(step)
    save_state(cache, tensors, step, rng)


def test_state_round_trip(cache: JobCache) -> None:
    assert load_state(cache) is None
    tensors, rng = _state(7)
    save_state(cache, tensors, 7, rng)
    got = load_state(cache)
    assert got is not None and _assert_consistent(got) == 7
    with pytest.raises(ValueError):
        save_state(cache, {"__rng_state__": rng}, 8, rng)


class _Crash(BaseException):
    pass


def test_state_survives_crash_at_every_filesystem_operation(
        cache: JobCache, monkeypatch: pytest.MonkeyPatch) -> None:
    """Die before the k-th replace/fsync/unlink of a save (dead = every later call fails too)."""
    real = {n: getattr(os, n) for n in ("replace", "fsync", "unlink")}
    k = 0
    while True:
        _save(cache, 1)
        calls = [0]

        def dying(name: str):  # noqa: ANN202
            def op(*a, **kw):  # noqa: ANN002, ANN003, ANN202
                calls[0] += 1
                if calls[0] > k:
                    raise _Crash
                return real[name](*a, **kw)
            return op

        for name in real:
            monkeypatch.setattr(os, name, dying(name))
        try:
            _save(cache, 2)
            finished = True
        except _Crash:
            finished = False
        finally:
            for name, fn in real.items():
                monkeypatch.setattr(os, name, fn)
        got = load_state(cache)
        assert got is not None
        assert _assert_consistent(got) == (2 if finished else got[1])
        if finished:
            break
        k += 1
    assert k >= 6  # the save really has that many steps to die between


def _save_forever(job_dir: str) -> None:  # runs in a forked child, killed with SIGKILL
    torch.set_num_threads(1)  # a forked child must not touch the parent's OpenMP pool
    cache = JobCache(Path(job_dir))
    with cache.lock(wait_s=5):
        got = load_state(cache)
        step = 0 if got is None else got[1] + 1
        while True:
            _save(cache, step)
            step += 1


@posix_only
def test_state_survives_sigkill_in_save_loop(cache: JobCache) -> None:
    rng = random.Random(20261123)
    ctx = multiprocessing.get_context("fork")  # forking skips a ~5 s torch import per child
    last, taken_over = -1, 0
    for _ in range(8):
        child = ctx.Process(target=_save_forever, args=(str(cache.dir),))
        child.start()
        child.join(timeout=rng.uniform(0.05, 0.25))
        assert child.is_alive(), "the save loop must still be running when killed"
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        assert child.exitcode == -signal.SIGKILL
        with cache.lock(wait_s=2) as lock:  # the dead child's lock is taken over
            owner = lock.previous_owner  # None only if killed before it wrote its pid
            assert owner is None or owner.pid == child.pid
            taken_over += owner is not None
            got = load_state(cache)
            if got is None:  # allowed only if no save ever finished (a very slow machine)
                assert last == -1, "a kill must never leave zero valid states"
                continue
            step = _assert_consistent(got)
            assert step >= last
            last = step
            cache.sweep()
            assert len(_files(cache)) == 2  # sidecar + one data file: no leaks after sweep
    assert last >= 1 and taken_over >= 1  # the children resumed from each other's states


# ---------------------------------------------------------------- locking

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from vividcli.cache.lock import JobLock
    with JobLock(Path(sys.argv[1])):
        print("locked", flush=True)
        time.sleep(60)
""")
TRY = textwrap.dedent("""
    import sys
    from pathlib import Path
    from vividcli.cache.lock import JobLock
    from vividcli.errors import VividError
    try:
        JobLock(Path(sys.argv[1]), wait_s=0.2).acquire()
    except VividError as e:
        print(e)
        sys.exit(e.exit_code)
""")


def _holder(job_dir: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(job_dir)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


@posix_only
def test_lock_excludes_other_process_and_is_taken_over_after_sigkill(tmp_path: Path) -> None:
    holder = _holder(tmp_path)
    try:
        other = subprocess.run([sys.executable, "-c", TRY, str(tmp_path)],
                               capture_output=True, text=True, timeout=30)
        message = (f"another vividvr process (pid {holder.pid}) is working on this job; "
                   "wait for it or kill it")
        assert (other.returncode, other.stdout.strip()) == (1, message)
        with pytest.raises(VividError) as info:
            JobLock(tmp_path, wait_s=0).acquire()
        assert str(info.value) == message
        owner = probe_lock(tmp_path)
        assert owner is not None and owner.pid == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert probe_lock(tmp_path) is None
    with JobLock(tmp_path, wait_s=0) as lock:
        assert lock.previous_owner is not None and lock.previous_owner.pid == holder.pid
    with JobLock(tmp_path, wait_s=0) as lock:  # released cleanly: nothing to take over
        assert lock.previous_owner is None


# ---------------------------------------------------------------- housekeeping


def _make_job(root: Path, key: str, status: str) -> JobCache:
    cache = JobCache.open(root, key)
    cache.write_info(JobInfo(input=f"/in/{key}.mp4", output=f"/out/{key}.mp4", options={}))
    cache.update_info(status=status)
    cache.put_bytes("blob", b"x" * 1000)
    return cache


@posix_only
def test_list_jobs_and_usage(tmp_path: Path) -> None:
    assert list_jobs(tmp_path) == [] and disk_usage(tmp_path) == 0
    done = _make_job(tmp_path, "aa11", "done")
    crashed = _make_job(tmp_path, "bb22", "running")  # "running" but nobody holds the lock
    with crashed.lock():
        status = {j.key: j.status for j in list_jobs(tmp_path)}
        assert status == {"aa11": "done", "bb22": "running"}
    jobs = {j.key: j for j in list_jobs(tmp_path)}
    assert jobs["bb22"].status == "interrupted" and jobs["bb22"].locked_by is None
    assert jobs["aa11"].input == "/in/aa11.mp4" and jobs["aa11"].size_bytes > 1000
    assert disk_usage(tmp_path) == sum(j.size_bytes for j in jobs.values())
    assert done.dir.is_dir()


@posix_only
def test_clean_respects_locks_age_and_filters(tmp_path: Path) -> None:
    for key, status in [("aa11", "done"), ("aa22", "running"), ("bb33", "done")]:
        _make_job(tmp_path, key, status)
    now = dt.datetime.now(dt.timezone.utc)
    assert clean(tmp_path, older_than=dt.timedelta(days=1), now=now).removed == []
    with pytest.raises(UsageError, match="several"):
        clean(tmp_path, job="aa")
    with pytest.raises(UsageError, match="no cached job"):
        clean(tmp_path, job="zz")
    with JobCache.open(tmp_path, "bb33").lock():
        later = now + dt.timedelta(days=2)
        dry = clean(tmp_path, older_than=dt.timedelta(days=1), only_done=True, dry_run=True,
                    now=later)
        assert [j.key for j in dry.removed] == ["aa11"] and len(list_jobs(tmp_path)) == 3
        report = clean(tmp_path, older_than=dt.timedelta(days=1), only_done=True, now=later)
        assert [j.key for j in report.removed] == ["aa11"]
        assert [j.key for j in report.skipped_locked] == ["bb33"]
        assert report.freed_bytes > 1000
        assert clean(tmp_path, job="bb").skipped_locked[0].key == "bb33"
    assert {j.key for j in list_jobs(tmp_path)} == {"aa22", "bb33"}
    assert [j.key for j in clean(tmp_path).removed] in (["aa22", "bb33"], ["bb33", "aa22"])
    assert list_jobs(tmp_path) == [] and disk_usage(tmp_path) == 0
    assert not any((tmp_path / "trash").iterdir())


def test_store_module_does_not_import_torch() -> None:
    code = "import sys, vividcli.cache.store; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=30).returncode == 0
    assert store.STATE_ENTRY == "state"
