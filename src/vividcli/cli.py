"""`vividvr`: the command line. Each command lives in `vividcli/commands/`; this module only wires them."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from vividcli import __version__
from vividcli.commands import caption, doctor, plan, restore
from vividcli.commands import compare as compare_command
from vividcli.commands import degrade as degrade_command
from vividcli.commands import evaluate as eval_command
from vividcli.commands.cache import cache_app
from vividcli.commands.models import models_app

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Restore low-quality video with Vivid-VR (or a classic, weight-free restorer).")


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"vividvr {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[Optional[bool], typer.Option("--version", callback=version_callback, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    """vividvr: faithful Vivid-VR video restoration as a Unix media tool."""


app.command()(restore.restore)
app.command()(plan.plan)
app.command()(caption.caption)
app.command("degrade")(degrade_command.degrade)
app.command("eval")(eval_command.evaluate)
app.command("compare")(compare_command.compare)
app.command()(doctor.doctor)
app.add_typer(cache_app, name="cache")
app.add_typer(models_app, name="models")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("error: aborted by a second Ctrl-C; the vivid engine's cache keeps the steps it saved: "
                   "run the same command again to resume", err=True)
        sys.exit(130)
