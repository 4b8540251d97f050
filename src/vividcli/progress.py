"""Progress for people and for logs.

On a terminal: rich progress bars (one for the batch, one for the current stage) with rate and ETA.
Elsewhere (CI logs, pipes): plain one-line records, at most one per stage every few seconds.
`--quiet` prints nothing but errors. Every reporter is also a `Progress` sink (what stages and engines
report to; `NullProgress` ignores it all).
"""

from __future__ import annotations

import sys
import time
from typing import Protocol, TextIO, runtime_checkable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress
from rich.text import Text


@runtime_checkable
class Progress(Protocol):
    """Progress sink a stage or engine reports to. Stages run one after another; totals are in units of work."""

    def stage(self, name: str, total: int | None) -> None:
        """A new stage starts ("restore", "encode prompts", ...), with `total` units, or None if unknown."""

    def advance(self, n: int = 1) -> None:
        """`n` more units of the current stage are done."""


class NullProgress:
    """A Progress that ignores everything (the default when the caller passes none)."""

    def stage(self, name: str, total: int | None) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass


# What one unit of each engine stage is (for rates: frames/s while decoding, ...).
STAGE_UNITS = {"restore": "frames", "decode": "frames", "encode": "clips", "denoise": "tile steps",
               "caption": "captions"}


def rate_text(done: int, seconds: float, stage: str) -> str:
    rate = done / max(seconds, 1e-9)
    return f"{rate:.2f} {STAGE_UNITS.get(stage, 'units')}/s"


class QuietReporter:
    def start_file(self, index: int, count: int, name: str) -> None: ...
    def stage(self, name: str, total: int | None) -> None: ...
    def advance(self, n: int = 1) -> None: ...
    def end_file(self, line: str) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


class LogReporter(QuietReporter):
    """One-line records: `[2/5] clip.mp4: denoise 40/400 (10%), 1.3/s, eta 0:04:37`."""

    def __init__(self, stream: TextIO | None = None, every_s: float = 5.0):
        self.stream, self.every_s = stream or sys.stderr, every_s
        self.prefix, self.name, self.total, self.done = "", "", None, 0
        self.started = self.last = 0.0

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def start_file(self, index: int, count: int, name: str) -> None:
        self.prefix = f"[{index}/{count}] {name}"
        self._print(f"{self.prefix}: start")

    def stage(self, name: str, total: int | None) -> None:
        self.name, self.total, self.done = name, total, 0
        self.started = self.last = time.monotonic()

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every_s or (self.total is not None and self.done >= self.total):
            self.last = now
            self._print(f"{self.prefix}: {self._status(now)}")

    def _status(self, now: float) -> str:
        if not self.total:
            return f"{self.name} {self.done}"
        rate = self.done / max(now - self.started, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        return (f"{self.name} {self.done}/{self.total} ({100 * self.done // self.total}%), "
                f"{rate_text(self.done, now - self.started, self.name)}, "
                f"eta {time.strftime('%H:%M:%S', time.gmtime(eta))}")

    def end_file(self, line: str) -> None:
        self._print(f"{self.prefix}: {line}")
        self.prefix = ""  # what follows (the batch summary) is not about this file

    def message(self, text: str) -> None:
        self._print(f"{self.prefix}: {text}" if self.prefix else text)


class RateColumn(ProgressColumn):
    """Units per second of a stage bar (frames/s while restoring or decoding)."""

    def render(self, task) -> Text:
        if task.speed is None or not task.fields.get("stage"):
            return Text("")
        return Text(rate_text(task.speed, 1.0, task.fields["stage"]), style="progress.data.speed")


class RichReporter(QuietReporter):
    """Live bars on a terminal: the batch, and the current stage of the current file."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.bars = RichProgress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
            RateColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
            console=self.console, transient=False,
        )
        self.bars.start()
        self.files = None
        self.task = None

    def start_file(self, index: int, count: int, name: str) -> None:
        if self.files is None:
            self.files = self.bars.add_task("files", total=count)
        self.bars.update(self.files, completed=index - 1, description=f"[{index}/{count}] {name}")

    def stage(self, name: str, total: int | None) -> None:
        if self.task is not None:
            self.bars.remove_task(self.task)
        self.task = self.bars.add_task(f"  {name}", total=total, stage=name)

    def advance(self, n: int = 1) -> None:
        if self.task is not None:
            self.bars.advance(self.task, n)

    def end_file(self, line: str) -> None:
        if self.files is not None:
            self.bars.advance(self.files)
        self.console.print(line)

    def message(self, text: str) -> None:
        self.console.print(text)

    def close(self) -> None:
        self.bars.stop()


def make_reporter(quiet: bool, stream: TextIO | None = None) -> QuietReporter:
    stream = stream or sys.stderr
    if quiet:
        return QuietReporter()
    if stream.isatty():
        return RichReporter()
    return LogReporter(stream)
