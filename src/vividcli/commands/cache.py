"""`vividvr cache ls|du|clean`: see and reclaim the resumable job cache."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Optional

import typer

from vividcli.cache.housekeeping import clean, disk_usage, list_jobs
from vividcli.cache.store import cache_root
from vividcli.commands.common import one_line_errors
from vividcli.errors import UsageError

cache_app = typer.Typer(no_args_is_help=True, help="See and reclaim the resumable job cache.")

CacheFolder = Annotated[Optional[Path], typer.Option("--cache-dir", help="Cache folder.")]
AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@cache_app.command("ls")
def cache_ls(cache_dir: CacheFolder = None) -> None:
    """List cached jobs."""
    for job in list_jobs(cache_root(cache_dir)):
        progress = job.progress or {}
        where = f"step {progress.get('step')}/{progress.get('steps')}" if progress else ""
        typer.echo(f"{job.key[:12]}  {job.status:<11} {job.size_bytes / 2**20:8.1f} MiB  {job.updated}  "
                   f"{where:<12} {job.input} -> {job.output}")


@cache_app.command("du")
def cache_du(cache_dir: CacheFolder = None) -> None:
    """Total size of the cache."""
    root = cache_root(cache_dir)
    typer.echo(f"{disk_usage(root) / 2**20:.1f} MiB\t{root}")


@cache_app.command("clean")
def cache_clean(
    cache_dir: CacheFolder = None,
    older_than: Annotated[Optional[str], typer.Option(help="Only jobs untouched for this long: 30m, 12h, 7d.")] = None,
    job: Annotated[Optional[str], typer.Option(help="Only this job (key or unique key prefix).")] = None,
    dry_run: Annotated[bool, typer.Option(help="Show what would be removed.")] = False,
) -> None:
    """Remove cached jobs (never one a live process is working on)."""
    with one_line_errors():
        age = parse_age(older_than) if older_than else None
        report = clean(cache_root(cache_dir), older_than=age, job=job, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    typer.echo(f"{verb} {len(report.removed)} job(s), {report.freed_bytes / 2**20:.1f} MiB; "
               f"{len(report.skipped_locked)} in use, kept")


def parse_age(text: str) -> dt.timedelta:
    try:
        return dt.timedelta(seconds=float(text[:-1]) * AGE_UNITS[text[-1]])
    except (KeyError, ValueError, IndexError):
        raise UsageError(f"--older-than takes a number and a unit (s, m, h, d, w), e.g. 7d; got {text!r}") from None
