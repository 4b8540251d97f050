"""Housekeeping of the whole cache: list jobs, measure disk use, delete jobs (`vividvr cache`)."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vividcli.cache.lock import JobLock, LockOwner, probe_lock
from vividcli.cache.store import JobCache
from vividcli.errors import UsageError, VividError


@dataclass(frozen=True)
class JobSummary:
    key: str
    path: Path
    input: str
    output: str
    status: str  # STATUSES, or "unknown" without a readable job.json
    size_bytes: int
    updated: dt.datetime
    locked_by: LockOwner | None
    progress: dict[str, Any]


@dataclass(frozen=True)
class CleanReport:
    removed: list[JobSummary]
    skipped_locked: list[JobSummary]
    freed_bytes: int


def list_jobs(root: Path) -> list[JobSummary]:
    """All cached jobs, most recently updated first."""
    jobs_dir = Path(root) / "jobs"
    if not jobs_dir.is_dir():
        return []
    jobs = [_summarize(d) for d in jobs_dir.iterdir() if d.is_dir() and not d.name.startswith(".")]
    return sorted(jobs, key=lambda j: j.updated, reverse=True)


def _summarize(job_dir: Path) -> JobSummary:
    info = JobCache(job_dir).read_info()
    owner = probe_lock(job_dir)
    status = info.status if info else "unknown"
    if status == "running" and owner is None:
        status = "interrupted"  # its process died (kill -9, power loss) before saying so
    try:
        updated = dt.datetime.fromisoformat(info.updated) if info else None
    except ValueError:
        updated = None
    if updated is None:
        updated = dt.datetime.fromtimestamp(job_dir.stat().st_mtime, dt.timezone.utc)
    elif updated.tzinfo is None:  # hand-edited job.json: comparisons need aware times
        updated = updated.replace(tzinfo=dt.timezone.utc)
    return JobSummary(job_dir.name, job_dir, info.input if info else "",
                      info.output if info else "", status, _tree_size(job_dir), updated,
                      owner, dict(info.progress) if info else {})


def _tree_size(path: Path) -> int:
    total = 0
    for d, _dirs, names in os.walk(path):
        for n in names:
            try:
                total += os.lstat(os.path.join(d, n)).st_size
            except FileNotFoundError:  # deleted while we walk
                pass
    return total


def disk_usage(root: Path) -> int:
    """Bytes used by the job cache under `root` (jobs and not yet emptied trash)."""
    return sum(_tree_size(Path(root) / sub) for sub in ("jobs", "trash"))


def clean(root: Path, *, older_than: dt.timedelta | None = None, job: str | None = None,
          only_done: bool = False, dry_run: bool = False,
          now: dt.datetime | None = None) -> CleanReport:
    """Delete cached jobs; never one whose lock a live process holds (it is skipped).

    `job` is a key or a unique key prefix (UsageError otherwise); `older_than` compares with
    job.json's `updated`; `only_done` keeps unfinished jobs, which are the resumable ones.
    """
    root = Path(root)
    _empty_trash(root)
    jobs = list_jobs(root)
    if job is not None:
        jobs = [_find_job(jobs, job)]
    now = now or dt.datetime.now(dt.timezone.utc)
    chosen = [j for j in jobs if (not only_done or j.status == "done")
              and (older_than is None or j.updated < now - older_than)]
    removed, skipped = [], []
    for j in chosen:
        done = j.locked_by is None if dry_run else _remove_job(root, j)
        (removed if done else skipped).append(j)
    return CleanReport(removed, skipped, sum(j.size_bytes for j in removed))


def _find_job(jobs: list[JobSummary], wanted: str) -> JobSummary:
    matches = [j for j in jobs if j.key == wanted] or [j for j in jobs if j.key.startswith(wanted)]
    if len(matches) != 1:
        what = "no cached job matches" if not matches else "several cached jobs match"
        raise UsageError(f"{what} {wanted!r}; see `vividvr cache ls`")
    return matches[0]


def _remove_job(root: Path, job: JobSummary) -> bool:
    try:
        lock = JobLock(job.path, wait_s=0).acquire()
    except VividError:
        return False
    try:  # rename under the lock: a new run then starts in a fresh folder, never a half-deleted one
        (root / "trash").mkdir(exist_ok=True)
        dest = root / "trash" / f"{job.key}.{secrets.token_hex(4)}"
        os.rename(job.path, dest)
    finally:
        lock.release()
    shutil.rmtree(dest, ignore_errors=True)
    return True


def _empty_trash(root: Path) -> None:
    """Finish deletions that an earlier `clean` started but did not complete (it was killed)."""
    trash = root / "trash"
    if trash.is_dir():
        for d in trash.iterdir():
            shutil.rmtree(d, ignore_errors=True)
