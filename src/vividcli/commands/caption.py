"""`vividvr caption`: write the per-clip, per-tile captions `restore` would use, to read and edit.

It takes every `restore` option that shapes the plan (size, tiles, clips) or the models, so the
options of a `restore` command line can be reused as they are. Like `restore`, it captions with the
default captioner of the checkpoint folder unless `--captioner` says otherwise; without one it warns
and writes empty captions (a template to fill in).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Annotated

import typer

from vividcli.commands.common import Debug, one_line_errors
from vividcli.commands.options import (
    Captioner,
    CkptDir,
    ClipFrames,
    Device,
    Dtype,
    Fps,
    Overwrite,
    TileSize,
    TrustRemoteCode,
    Upscale,
)
from vividcli.config import RestoreOptions
from vividcli.devices import check_device_name, dtype_name
from vividcli.errors import UsageError
from vividcli.media.probe import parse_fps


@dataclass(frozen=True)
class CaptionRequest:
    input: Path
    output: Path
    captioner: str | None  # None: the default captioner; "none": an empty template to fill in
    trust_remote_code: bool
    options: RestoreOptions  # only the fields that shape the plan matter
    fps: Fraction | None
    ckpt_dir: Path | None
    device: str
    dtype: str


def caption(
    input: Annotated[Path, typer.Argument(help="A video file or image-sequence folder.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Captions JSON to write (per clip, per tile).")],
    captioner: Captioner = None,
    trust_remote_code: TrustRemoteCode = False,
    upscale: Upscale = 0.0,
    tile_size: TileSize = 128,
    clip_frames: ClipFrames = 121,
    fps: Fps = None,
    ckpt_dir: CkptDir = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    overwrite: Overwrite = False,
    debug: Debug = False,
) -> None:
    """Write the per-clip, per-tile captions `restore` would use, to read, edit and pass back with --captions-file."""
    with one_line_errors(debug=debug):
        if output.exists() and not overwrite:
            raise UsageError(f"{output} exists; use --overwrite to replace it")
        if not input.exists():
            raise UsageError(f"input {input} does not exist")
        check_device_name(device)
        request = CaptionRequest(
            input=input, output=output, captioner=captioner, trust_remote_code=trust_remote_code,
            options=RestoreOptions(upscale=upscale, tile_size=tile_size, clip_frames=clip_frames),
            fps=parse_fps(fps, UsageError) if fps is not None else None, ckpt_dir=ckpt_dir, device=device,
            dtype=dtype_name(dtype))
        run(request)


def run(request: CaptionRequest) -> None:
    from vividcli.devices import resolve_device, resolve_dtype
    from vividcli.hub import download_command, resolve_ckpt_dir
    from vividcli.media.reader import open_source
    from vividcli.planning.plan import plan_restoration
    from vividcli.stages.caption import NoCaptions, generate_captions
    from vividcli.stages.caption_file import write_captions_file
    from vividcli.stages.captioners import choose_captioner, make_captioner

    ckpt_dir = resolve_ckpt_dir(request.ckpt_dir)
    choice = choose_captioner(request.captioner, ckpt_dir, download_command=download_command("captioner", ckpt_dir))
    if choice.warning:
        typer.echo(f"warning: {choice.warning}", err=True)
    source = open_source(request.input, request.fps)
    plan = plan_restoration(source.num_frames, source.height, source.width, request.options)
    if choice.model is None:
        captions = generate_captions(plan, source, NoCaptions(), float(source.info.fps))
    else:
        device = resolve_device(request.device)
        typer.echo(f"captioning {len(plan.tiles)} tiles x {len(plan.clips)} clips with {choice.label}", err=True)
        model = make_captioner(choice.model, device, resolve_dtype(request.dtype, device), request.trust_remote_code)
        try:
            captions = generate_captions(plan, source, model, float(source.info.fps))
        finally:
            model.unload()
    write_captions_file(request.output, captions)
