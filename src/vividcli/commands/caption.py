"""`vividvr caption`: write the per-clip, per-tile captions `restore` would use, to read and edit.

It takes every `restore` option that shapes the plan (size, tiles, clips) or the models, so the
options of a `restore` command line can be reused as they are.
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
    captioner: str  # "none": an empty template to fill in
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
            input=input, output=output, captioner=captioner or "none", trust_remote_code=trust_remote_code,
            options=RestoreOptions(upscale=upscale, tile_size=tile_size, clip_frames=clip_frames),
            fps=parse_fps(fps) if fps is not None else None, ckpt_dir=ckpt_dir, device=device,
            dtype=dtype_name(dtype))
        run(request)


def run(request: CaptionRequest) -> None:
    from vividcli.devices import resolve_device, resolve_dtype
    from vividcli.media.reader import open_source
    from vividcli.planning.plan import plan_restoration
    from vividcli.stages.caption import NoCaptions, generate_captions
    from vividcli.stages.caption_file import write_captions_file
    from vividcli.stages.captioners import make_captioner

    source = open_source(request.input, request.fps)
    plan = plan_restoration(source.num_frames, source.height, source.width, request.options)
    if request.captioner == "none":
        model = NoCaptions()
    else:
        device = resolve_device(request.device)
        model = make_captioner(request.captioner, device, resolve_dtype(request.dtype, device),
                               request.trust_remote_code)
    captions = generate_captions(plan, source, model, float(source.info.fps))
    write_captions_file(request.output, captions)
