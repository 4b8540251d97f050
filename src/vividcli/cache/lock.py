"""Per-job exclusive lock (flock) and a non-blocking probe of who holds it (see docs/cache.md)."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from vividcli.cache._io import _now_iso, canonical_json
from vividcli.errors import VividError

try:  # flock is the lock primitive; Windows has no fcntl (see JobLock)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("vividcli.cache")


@dataclass(frozen=True)
class LockOwner:
    pid: int
    host: str
    started: str


class JobLock:
    """Exclusive per-job lock: `fcntl.flock` on `<job>/lock`, which also records the owner.

    The kernel drops a flock when its holder dies, kill -9 included, so a lock can never go
    stale and no pid-liveness guess (pid reuse, other hosts) is needed. The recorded owner only
    serves the error message and `previous_owner`: a release empties the file, so an owner
    still recorded when we acquire means the last run died without releasing (it crashed).
    Waits up to `wait_s` for the lock (so a brief `cache ls` probe never fails a start), then
    raises VividError. Windows has no flock: acquiring raises VividError there.
    """

    def __init__(self, job_dir: Path, *, wait_s: float = 1.0):
        self.path = Path(job_dir) / "lock"
        self.wait_s = wait_s
        self.previous_owner: LockOwner | None = None
        self._fd: int | None = None

    def acquire(self) -> JobLock:
        if fcntl is None:  # pragma: no cover - Windows
            raise VividError("resumable jobs need fcntl.flock, which Windows lacks (Linux and "
                             "macOS have it)")
        if self._fd is not None:
            raise RuntimeError("JobLock is not re-entrant")
        deadline = time.monotonic() + self.wait_s
        while (fd := _try_flock(self.path)) is None:
            if time.monotonic() >= deadline:
                raise VividError(_busy_message(_read_owner(self.path)))
            time.sleep(0.05)
        self._fd = fd
        try:
            self.previous_owner = _parse_owner(os.pread(fd, 4096, 0))
            if self.previous_owner is not None:
                log.info("the job lock of pid %s was never released (that run died); "
                         "taking it over", self.previous_owner.pid)
            me = LockOwner(os.getpid(), socket.gethostname(), _now_iso())
            os.ftruncate(fd, 0)
            os.pwrite(fd, canonical_json(me.__dict__), 0)
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # empty = released cleanly (see previous_owner)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> JobLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _try_flock(path: Path) -> int | None:
    """An fd holding the flock on `path`, or None if a live process holds it."""
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited across exec (PEP 446)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        # `clean` may have moved the job away between our open and flock: then we would hold a
        # lock on a file nobody else sees. Retry until the locked file is the one at `path`.
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def probe_lock(job_dir: Path) -> LockOwner | None:
    """The owner if a live process holds the job's lock, else None. Creates nothing."""
    path = Path(job_dir) / "lock"
    if fcntl is None:  # pragma: no cover - Windows
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # held for microseconds; see JobLock
    except BlockingIOError:
        return _parse_owner(os.pread(fd, 4096, 0)) or LockOwner(0, "", "")
    finally:
        os.close(fd)  # also releases our shared lock
    return None


def _read_owner(path: Path) -> LockOwner | None:
    try:
        return _parse_owner(path.read_bytes())
    except OSError:
        return None


def _parse_owner(raw: bytes) -> LockOwner | None:
    try:
        return LockOwner(**json.loads(raw))
    except (ValueError, TypeError):
        return None  # empty (released cleanly) or being written


def _busy_message(owner: LockOwner | None) -> str:
    if owner is None or owner.pid == 0:
        who = "another vividvr process"
    elif owner.host and owner.host != socket.gethostname():
        who = f"another vividvr process (pid {owner.pid} on {owner.host})"
    else:
        who = f"another vividvr process (pid {owner.pid})"
    return f"{who} is working on this job; wait for it or kill it"
