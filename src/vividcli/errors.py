"""User-facing errors: one line that says what is wrong and what to do."""

from __future__ import annotations


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
