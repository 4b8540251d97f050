"""`--textfix` on any engine: its restored frames, with text regions from the Real-ESRGAN-enhanced input.

    engine = TextFixEngine(VividEngine(...), TextFixer(sr_model_path), scale_factor=2.0)

The fixer needs, beside each restored frame, the input frame upscaled to the output size, the
picture the colour fix also compares against. For Vivid-VR that is the reference's bicubic
upscale by the scale factor (`upscale_video`), recomputed here from a second pass over the source,
so no frame is held beyond the one in flight.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from vividcli.engines.base import Engine
from vividcli.media.reader import FrameSource
from vividcli.progress import Progress
from vividcli.stages.resize import upscale_video
from vividcli.stages.textfix import TextFixer

__all__ = ["TextFixEngine"]


class TextFixEngine:
    """Wraps an engine; same output size and frame count, text regions replaced (see `TextFixer`)."""

    def __init__(self, inner: Engine, fixer: TextFixer, scale_factor: float | None = None):
        self.inner = inner
        self.fixer = fixer
        self.scale_factor = scale_factor  # the inner engine's upscale factor, when it has one
        self.name = f"{inner.name}+textfix"
        self.resumable = getattr(inner, "resumable", False)  # the text fix itself keeps no state

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        return self.inner.output_size(width, height)

    def upscaled_inputs(self, source: FrameSource) -> Iterator[np.ndarray]:
        """Each input frame, bicubic-upscaled to the output size and clipped to [0, 1] (HxWx3 float32)."""
        w, h = self.output_size(source.width, source.height)
        factor = self.scale_factor
        # By the factor when that is how the engine sized its output (Vivid-VR: floor(size x factor)).
        by_factor = factor is not None and (h, w) == (math.floor(source.height * factor),
                                                        math.floor(source.width * factor))
        for frame in source.frames():
            x = torch.from_numpy(np.ascontiguousarray(frame, dtype=np.float32)).permute(2, 0, 1)[None]
            if by_factor:
                y = upscale_video(x, factor)
            elif x.shape[-2:] == (h, w):
                y = x
            else:
                y = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False).clip(0, 1)
            yield np.ascontiguousarray(y[0].permute(1, 2, 0).numpy())

    def restore(self, source: FrameSource, progress: Progress | None = None) -> Iterator[np.ndarray]:
        yield from self.fixer.fix_frames(self.inner.restore(source, progress), self.upscaled_inputs(source))
