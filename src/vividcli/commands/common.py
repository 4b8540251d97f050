"""What every command shares: the one-line error exit, --debug logging, and the options they share.

A command body builds a validated config and hands it on inside `one_line_errors(debug=...)`:

    @app.command()
    def degrade(input: ..., debug: Debug = False) -> None:
        with one_line_errors(debug=debug):
            config = DegradeConfig.from_options(...)  # UsageError (exit 2) on bad values
            code = run_degrade(config)
        raise typer.Exit(code)

Any exception leaving the block becomes `error: <one line>` on stderr and its exit code (a
VividError's own, 1 for anything else); --debug also logs the traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, NoReturn

import typer

from vividcli.errors import error_line

Debug = Annotated[bool, typer.Option(help="Show tracebacks.")]


def fail(message: str, code: int, *, debug: bool = False) -> NoReturn:
    """Print `error: <message>` on stderr (and, with --debug, the traceback being handled) and exit."""
    if debug:
        logging.getLogger("vividcli").error(message, exc_info=sys.exc_info()[0] is not None)
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def show_debug_log(debug: bool) -> None:
    """With --debug, vividcli's debug records (tracebacks of failed inputs among them) go to stderr."""
    logger = logging.getLogger("vividcli")
    if debug and not any(getattr(h, "vividvr_debug", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.vividvr_debug = True  # one handler however often the CLI runs in a process (tests)
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)


@contextmanager
def one_line_errors(*, debug: bool = False,
                    on_error: Callable[[str, int], None] | None = None) -> Iterator[None]:
    """Turn any exception into one line and an exit code; `on_error(message, code)` runs first
    (e.g. to print a --json report that scripts parse whatever happened)."""
    show_debug_log(debug)
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:
        message, code = error_line(exc)
        if on_error is not None:
            on_error(message, code)
        fail(message, code, debug=debug)
