"""User-facing errors: one line that says what is wrong and what to do.

Everything that turns an exception into the one line a user reads lives here (`first_line`,
`describe_exception`, `unexpected_error`), so every command and stage words it the same way.
"""

from __future__ import annotations

import re


class VividError(Exception):
    """An error the user can act on; the CLI prints it on one line and exits with `exit_code`."""

    exit_code: int = 1

    def __init__(self, message: str, *, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(VividError):
    """Bad options or arguments (exit code 2, like Typer/Click usage errors)."""

    exit_code = 2


class CheckpointError(VividError):
    """A checkpoint folder, file, key or shape is missing or wrong."""


class MediaError(VividError):
    """An input cannot be read or an output cannot be written."""


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def first_line(text: object, limit: int = 300) -> str:
    """The first non-empty line of `text` (an exception's message, say), without terminal escapes,
    plus the next one when the first ends in ':' (it announces it), cut to at most `limit`
    characters; "" when there is none."""
    lines = [line.strip() for line in _ANSI.sub("", str(text)).splitlines() if line.strip()]
    line = " ".join(lines[:2]) if len(lines) > 1 and lines[0].endswith(":") else (lines[0] if lines else "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def describe_exception(exc: BaseException, limit: int = 300) -> str:
    """`TypeName: first line of the message` (just the type name when the message is empty)."""
    text = first_line(exc, limit)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def unexpected_error(exc: BaseException) -> str:
    """One line for an exception no stage turned into a VividError (out of GPU memory, or a bug)."""
    if "out of memory" in str(exc).lower():
        return ("out of GPU memory; try a smaller --tile-size (e.g. 64), a shorter --clip-frames "
                "(e.g. 49), --dtype bfloat16, or a smaller --upscale")
    text = first_line(exc)
    return f"unexpected {type(exc).__name__}: {text} (please report it; --debug shows the traceback)"


def error_line(exc: BaseException) -> tuple[str, int]:
    """(the one line to print, the exit code) for any exception a command ends with."""
    if isinstance(exc, VividError):
        return str(exc), exc.exit_code
    return unexpected_error(exc), 1
