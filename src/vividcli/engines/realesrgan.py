"""Frame-wise super-resolution with any image model spandrel can load (Real-ESRGAN and friends).

    engine = RealESRGANEngine("RealESRGAN_x2plus.pth")          # scale from the model
    w, h = engine.output_size(640, 360)                          # (1280, 720)
    for frame in engine.restore(source, progress): ...           # float32 HxWx3 in [0, 1]

The model code (loading, tiling, dtype rules) is `vividcli.models.realesrgan`, shared with the text fix.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vividcli.errors import UsageError
from vividcli.media.reader import FrameSource
from vividcli.models.realesrgan import DEFAULT_OVERLAP, DEFAULT_TILE, TiledUpscaler, load_sr_model, resolve_device_dtype
from vividcli.progress import NullProgress, Progress

__all__ = ["RealESRGANEngine"]


def _check_scale(scale: float | None) -> None:
    if scale is not None and not scale > 0:
        raise UsageError(f"scale must be positive, not {scale}")


class RealESRGANEngine:
    """Frame-by-frame super-resolution with a spandrel-loadable model (`--engine realesrgan --sr-model PATH`).

    What it is: each frame through one image model (Real-ESRGAN x2plus/x4plus, any ESRGAN-family,
    SwinIR, HAT, ... file spandrel recognises), tiled for memory, streaming one frame at a time.
    What it is not: temporal. Frames are independent, so a model that hallucinates texture may
    flicker; there is no caption, no diffusion and no colour fix.

    `scale=None` uses the model's own factor. Another scale resizes the model's output to
    round(scale x input size) with antialiased bicubic (like Real-ESRGAN's `--outscale`, which
    resizes with Lanczos): e.g. an x4 model for a x2 output.
    """

    name = "realesrgan"

    def __init__(self, model_path: str | os.PathLike[str], scale: float | None = None, tile: int = DEFAULT_TILE,
                 device: str | torch.device | None = None, dtype: torch.dtype | str | None = None,
                 overlap: int = DEFAULT_OVERLAP):
        _check_scale(scale)
        self.model_path = Path(model_path)
        self.descriptor = load_sr_model(self.model_path)
        dev, dt = resolve_device_dtype(self.descriptor, device, dtype)
        self.upscaler = TiledUpscaler(self.descriptor, dev, dt, tile=tile, overlap=overlap)
        self.model_scale = self.upscaler.scale
        self.scale = float(scale) if scale is not None else float(self.model_scale)

    def with_scale(self, scale: float | None) -> "RealESRGANEngine":
        """The same loaded model with another output scale (None: the model's; a batch loads the model once)."""
        _check_scale(scale)
        engine = copy.copy(self)
        engine.scale = float(scale) if scale is not None else float(self.model_scale)
        return engine

    @property
    def device(self) -> torch.device:
        return self.upscaler.device

    @property
    def dtype(self) -> torch.dtype:
        return self.upscaler.dtype

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """Input size times the model's scale (exact), or times `scale` rounded half up, at least 1x1."""
        if self.scale == self.model_scale:
            return width * self.model_scale, height * self.model_scale
        return max(1, int(width * self.scale + 0.5)), max(1, int(height * self.scale + 0.5))

    @torch.inference_mode()
    def upscale_frame(self, frame: np.ndarray) -> np.ndarray:
        """One float32 HxWx3 frame in [0, 1] -> the restored float32 frame of `output_size`, clamped."""
        h, w = frame.shape[:2]
        x = torch.from_numpy(np.ascontiguousarray(frame, dtype=np.float32)).permute(2, 0, 1)[None]
        y = self.upscaler(x)
        ow, oh = self.output_size(w, h)
        if y.shape[-2:] != (oh, ow):
            y = F.interpolate(y, size=(oh, ow), mode="bicubic", align_corners=False, antialias=True)
        y = y.clamp_(0, 1)[0].permute(1, 2, 0)
        return np.ascontiguousarray(y.cpu().numpy(), dtype=np.float32)

    def restore(self, source: FrameSource, progress: Progress | None = None) -> Iterator[np.ndarray]:
        """Yield each frame as soon as it is upscaled."""
        progress = progress or NullProgress()
        progress.stage("restore", source.info.num_frames)
        for frame in source.frames():
            out = self.upscale_frame(frame)
            progress.advance(1)  # before the yield: the consumer may never resume us after the last frame
            yield out
