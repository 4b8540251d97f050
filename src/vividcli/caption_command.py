"""`vividvr caption`: write the captions `restore` would use, for a person to read and edit."""

from __future__ import annotations

from pathlib import Path

from vividcli.config import RestoreOptions
from vividcli.errors import UsageError
from vividcli.media.reader import open_source
from vividcli.pipeline import plan_restoration
from vividcli.restore_command import parse_fps, resolve_device, resolve_dtype


def run(*, input: Path, output: Path, captioner: str, trust_remote_code: bool, upscale: float, tile_size: int,
        clip_frames: int, fps: str | None, device: str, dtype: str, overwrite: bool) -> None:
    import torch

    from vividcli.stages.caption import NoCaptions, generate_captions, make_captioner, write_captions_file

    if output.exists() and not overwrite:
        raise UsageError(f"{output} exists; use --overwrite to replace it")
    options = RestoreOptions(upscale=upscale, tile_size=tile_size, clip_frames=clip_frames)
    source = open_source(input, parse_fps(fps))
    plan = plan_restoration(source.num_frames, source.height, source.width, options)
    if captioner == "none":
        model = NoCaptions()
    else:
        device = resolve_device(device)
        model = make_captioner(captioner, device, getattr(torch, resolve_dtype(dtype, device)), trust_remote_code)
    captions = generate_captions(plan, source, model, float(source.info.fps), tile_size=tile_size)
    write_captions_file(output, captions)
