"""Captions for every spatial tile of every temporal clip: from a vision-language model, one fixed
text, a captions file, or none.

    captions = generate_captions(plan, source, TransformersCaptioner("Qwen/Qwen2.5-VL-7B-Instruct"), fps)
    write_captions_file("clip.captions.json", captions)      # edit, then --captions-file

The model back-ends are in `stages/captioners.py`, the file format in `stages/caption_file.py`.

What the captioner sees, per clip (reference `infer_whole_video` / `infer_split_clips` +
`prepare_validation_prompts`): the clip's frames upscaled like the control video (bicubic, clipped),
padded to 8k+1 frames by repeating the last one, resized bicubically to the gen size (not clipped),
then cropped to each caption region (`planning.captions`, one per latent tile, row-major).
The captioner gets that tile video [F, C, h, w] and the input's frame rate, and samples frames
itself (`sample_frame_indices`: one frame per second plus the last frame, like the reference).

Only one clip's frames are held at a time (at the gen size: F x 3 x H x W float32), never the
whole video.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import numpy as np
import torch

from vividcli.errors import VividError
from vividcli.media.reader import FrameSource
from vividcli.planning.captions import caption_regions
from vividcli.planning.plan import RestorePlan
from vividcli.stages.caption_file import load_captions_file, parse_captions
from vividcli.stages.resize import caption_video, upscale_video

ProgressFn = Callable[[int, int, str], None]
"""progress(clip_index, tile_index, caption), called after each caption."""


@runtime_checkable
class Captioner(Protocol):
    """Describes one tile video: [F, C, H, W] float32, nominally [0, 1] (bicubic overshoot is kept)."""

    def caption(self, video: torch.Tensor, fps: float) -> str: ...


@runtime_checkable
class CaptionSource(Protocol):
    """Captions that do not need the frames (fixed text, none, a file)."""

    def captions_for(self, num_clips: int, num_tiles: int) -> list[list[str]]: ...


# --------------------------------------------------------------------------- frame sampling


def sample_frame_indices(num_frames: int, fps: float | None) -> list[int]:
    """Frames the reference CogVLM2 captioner looks at (`CogVLM2_Captioner.get_index`).

    With step = round(fps) (Python rounding, so 29.97 -> 30 and 23.976 -> 24): frames 0, step,
    2*step, ... (max(num_frames // step, 1) of them, i.e. one per second), plus the last frame if
    not already there. A missing/zero fps means min(15, num_frames), as in the reference.
    Deviation: fps < 0.5 rounds to 0, a ZeroDivisionError in the reference; here the step is 1.
    """
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {num_frames}")
    if not fps:
        fps = min(15, num_frames)
    step = max(1, round(float(fps)))
    indices = [i * step for i in range(max(num_frames // step, 1))]
    if indices[-1] != num_frames - 1:
        indices.append(num_frames - 1)
    return indices


# --------------------------------------------------------------------------- planning and streaming


def read_caption_clip(source: FrameSource, plan: RestorePlan, clip_index: int) -> torch.Tensor:
    """The gen-size caption video of one clip, [P, C, H, W] float32 with P = 8k+1 (padded).

    Equal to the reference's F.interpolate(pad(upscale(frames)), gen_size, "bicubic"), computed
    one frame at a time (both resizes treat frames independently) so the upscaled copy of the
    whole clip is never held next to the gen-size one.
    """
    clip = plan.clips[clip_index]
    geometry = plan.geometry
    count = clip.stop - clip.start
    out = torch.empty((count + clip.padding, 3, *geometry.gen_size), dtype=torch.float32)
    n = 0
    for frame in source.frames(clip.start, clip.stop):
        tensor = torch.from_numpy(np.asarray(frame, dtype=np.float32)).permute(2, 0, 1)[None].contiguous()
        out[n] = caption_video(upscale_video(tensor, geometry.scale_factor), geometry.gen_size)[0]
        n += 1
    if n != count:
        raise VividError(f"expected {count} frames for clip {clip_index}, the source gave {n}")
    if clip.padding:
        out[count:] = out[count - 1]
    return out


def caption_plan(
    plan: RestorePlan,
    source: FrameSource,
    captioner: Captioner,
    fps: float,
    *,
    progress: ProgressFn | None = None,
) -> list[list[str]]:
    """Run `captioner` on every caption region of every clip: captions[clip][tile], tiles row-major.

    `fps` is the input's frame rate (the reference passes the file's rate, 24 for image folders).
    """
    regions = caption_regions(plan)
    captions: list[list[str]] = []
    for c in range(len(plan.clips)):
        video = read_caption_clip(source, plan, c)
        clip_captions = []
        for region in regions:
            tile = video[:, :, region.h0 : region.h1, region.w0 : region.w1]
            text = captioner.caption(tile, fps)
            if not isinstance(text, str):
                raise TypeError(f"{type(captioner).__name__}.caption returned {type(text).__name__}, not str")
            clip_captions.append(text)
            if progress is not None:
                progress(c, region.index, text)
        del video
        captions.append(clip_captions)
    return captions


def generate_captions(
    plan: RestorePlan,
    source: FrameSource,
    captioner: Captioner | CaptionSource,
    fps: float,
    *,
    progress: ProgressFn | None = None,
) -> list[list[str]]:
    """Captions for `plan` from any source: a model (`Captioner`, reads the frames) or a
    `CaptionSource` (`FixedCaptions`, `NoCaptions`, `CaptionsFile`: no frames are read).
    The result is checked: one list per clip, one string per latent tile."""
    num_clips, num_tiles = len(plan.clips), len(plan.tiles)
    if isinstance(captioner, CaptionSource):
        captions = captioner.captions_for(num_clips, num_tiles)
    else:
        captions = caption_plan(plan, source, captioner, fps, progress=progress)
    return parse_captions(captions, num_clips, num_tiles, source=type(captioner).__name__)


# --------------------------------------------------------------------------- non-model sources


@dataclass(frozen=True)
class FixedCaptions:
    """The same caption for every clip and tile (`--caption TEXT`)."""

    text: str

    def caption(self, video: torch.Tensor, fps: float) -> str:
        return self.text

    def captions_for(self, num_clips: int, num_tiles: int) -> list[list[str]]:
        return [[self.text] * num_tiles for _ in range(num_clips)]


class NoCaptions(FixedCaptions):
    """Empty captions: every prompt is just the fixed suffix. As in the reference, the prompt is
    f"{caption} {suffix}", so it then starts with a space (kept: it changes the T5 tokens)."""

    def __init__(self) -> None:
        super().__init__("")

    def __repr__(self) -> str:
        return "NoCaptions()"


@dataclass(frozen=True)
class CaptionsFile:
    """Captions from a JSON file ([clip][tile] -> text), checked against the plan (`--captions-file`)."""

    path: Path

    def captions_for(self, num_clips: int, num_tiles: int) -> list[list[str]]:
        return load_captions_file(self.path, num_clips, num_tiles)
