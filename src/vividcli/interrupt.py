"""Graceful Ctrl-C / SIGTERM for hours-long jobs.

The first SIGINT or SIGTERM only sets a flag; the sampling loop checks it at safe points (after
a step's state is saved) and stops there, so no work is lost. A second Ctrl-C means "stop now"
and raises KeyboardInterrupt at once. Typical use::

    with GracefulInterrupt(on_request=lambda s: print("stopping after this step; "
                                                      "Ctrl-C again to abort now")) as stop:
        for step in ...:
            ...  # one denoising step
            save_state(cache, tensors, step, rng)
            stop.check()  # raises Interrupted(exit code 130 / 143) if a stop was asked for

The CLI prints `Interrupted` like any VividError (one line) and exits with its exit code.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any, Callable, Iterable

from vividcli.errors import VividError

_SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}


def exit_code_for(signum: int) -> int:
    """Shell convention for death by a signal: 128 + number (SIGINT 130, SIGTERM 143)."""
    return 128 + int(signum)


class Interrupted(VividError):
    """The job stopped at a safe point because it was asked to; re-running resumes it."""

    def __init__(self, signum: int, message: str | None = None):
        self.signum = int(signum)
        name = _SIGNAL_NAMES.get(signum, f"signal {int(signum)}")
        super().__init__(
            message or f"interrupted by {name}; the work done so far is cached: "
            "run the same command again to resume",
            exit_code=exit_code_for(signum),
        )


class GracefulInterrupt:
    """Turns the first SIGINT/SIGTERM into a flag; restores the previous handlers on exit.

    `requested`/`signum` tell whether and how a stop was asked for; `exit_code` is 130 or 143
    (None before any request). A second SIGINT raises KeyboardInterrupt; a second SIGTERM is
    ignored (service managers send SIGKILL after their timeout anyway, and the cache survives
    that). `on_request(signum)` runs once, inside the Python signal handler in the main thread:
    keep it short (print a line). Must be entered in the main thread, where Python runs signal
    handlers.
    """

    def __init__(self, signums: Iterable[int] = (signal.SIGINT, signal.SIGTERM), *,
                 on_request: Callable[[int], None] | None = None):
        self.signums = tuple(signums)
        self.on_request = on_request
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int | None:
        return None if self.signum is None else exit_code_for(self.signum)

    def check(self) -> None:
        """Call at a safe point: raises Interrupted if a stop was requested."""
        if self.signum is not None:
            raise Interrupted(self.signum)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
            if self.on_request is not None:
                self.on_request(signum)
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt

    def __enter__(self) -> GracefulInterrupt:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("GracefulInterrupt must be used in the main thread")
        for s in self.signums:
            self._previous[s] = signal.getsignal(s)
            signal.signal(s, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for s, handler in self._previous.items():
            # None means "installed from C": the default is the closest we can restore.
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()
