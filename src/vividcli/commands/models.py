"""`vividvr models ...`: download, verify, list and locate the checkpoints.

Mounted by `cli.py` as `vividvr models`. Every command finds the
checkpoint folder with `vividcli.hub.resolve_ckpt_dir` (`--ckpt-dir`, else `$VIVIDVR_CKPT_DIR`, else
`$HF_HOME/vividvr`). Errors are one line on stderr (`error: ...`) and the error's exit code; no traceback.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from vividcli import hub
from vividcli.commands.common import one_line_errors

models_app = typer.Typer(
    no_args_is_help=True,
    help="Download, verify, list and locate the model checkpoints (official Vivid-VR layout).",
)

CkptDir = Annotated[Optional[Path], typer.Option(
    "--ckpt-dir", show_default=False,
    help="Checkpoint folder (official layout). Default: $VIVIDVR_CKPT_DIR, else $HF_HOME/vividvr "
         "(~/.cache/huggingface/vividvr).",
)]


class What(str, Enum):
    default = "default"
    required = "required"
    vividvr = "vividvr"
    cogvideox = "cogvideox"
    captioner = "captioner"
    textfix = "textfix"
    all = "all"


def _size(n: int) -> str:
    if n <= 0:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


@models_app.command()
def download(
    what: Annotated[What, typer.Option(
        "--what", case_sensitive=False,
        help="default: what `restore` uses without caption options, i.e. required + captioner (~39 GB). "
             "required: the restoration models only, Vivid-VR + CogVideoX1.5-5B (~30 GB; `restore` then "
             "warns and uses empty captions). Or one part: vividvr; cogvideox; captioner (Qwen3-VL-4B-Instruct, "
             "~8.9 GB, automatic captions); textfix (Real-ESRGAN x2plus, 64 MiB). all: every part.",
    )] = What.default,
    ckpt_dir: CkptDir = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show download progress bars.")] = True,
) -> None:
    """Download pinned checkpoints into the checkpoint folder (resumes interrupted downloads)."""
    root = hub.resolve_ckpt_dir(ckpt_dir)
    try:
        with one_line_errors():
            for name in hub.GROUPS[what.value]:
                (folder,) = hub.download(name, root, progress=progress)
                typer.echo(f"{name}: {folder}")
    except KeyboardInterrupt:
        typer.echo("error: interrupted; run the same command again to resume", err=True)
        raise typer.Exit(130) from None


@models_app.command()
def verify(
    ckpt_dir: CkptDir = None,
    hashes: Annotated[bool, typer.Option(
        "--hashes", help="Also re-hash downloaded files against the hashes recorded at download time (slow).",
    )] = False,
) -> None:
    """Check the checkpoint files without loading the weights; print "ok", or each problem on one line (exit 1).

    Checks presence, JSON, safetensors headers and sizes (truncation), index consistency, .pt files, and
    every key and shape against the models built on the meta device from the checkpoint's config.json.
    """
    root = hub.resolve_ckpt_dir(ckpt_dir)
    with one_line_errors():
        problems = hub.verify(root, hashes=hashes)
    if not problems:
        typer.echo("ok")
        return
    for problem in problems:
        typer.echo(str(problem))
    typer.echo(f"{len(problems)} problem(s) in {root}; download again with `vividvr models download` or copy "
               f"the files in by hand (docs/models.md)", err=True)
    raise typer.Exit(1)


@models_app.command("list")
def list_(ckpt_dir: CkptDir = None) -> None:
    """Show each component: present / missing / incomplete, size on disk, folder, downloaded revision."""
    root = hub.resolve_ckpt_dir(ckpt_dir)
    typer.echo(f"checkpoint folder: {root}")
    for s in hub.list_models(root):
        kind = "required" if s.required else "optional"
        revision = f"  @ {s.revision[:12]}" if s.revision else ""
        typer.echo(f"{s.name:<10} {s.state:<10} {kind:<8} {_size(s.size_bytes):>10}  {s.path}{revision}")
        if s.note:
            typer.echo(f"{'':<10} {s.note}")


@models_app.command()
def path(ckpt_dir: CkptDir = None) -> None:
    """Print the checkpoint folder every command uses (--ckpt-dir, $VIVIDVR_CKPT_DIR, $HF_HOME/vividvr)."""
    typer.echo(str(hub.resolve_ckpt_dir(ckpt_dir)))
