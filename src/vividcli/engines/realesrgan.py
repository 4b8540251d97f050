"""Frame-wise super-resolution with any image model spandrel can load (Real-ESRGAN and friends).

    engine = RealESRGANEngine("RealESRGAN_x2plus.pth")          # scale from the model
    w, h = engine.output_size(640, 360)                          # (1280, 720)
    for frame in engine.restore(source, progress): ...           # float32 HxWx3 in [0, 1]

The same tiled upscaler (`upscale`) serves the text fix (`vividcli.stages.textfix`), which runs
Real-ESRGAN x2plus on the upscaled input like the reference's enhancer.

Loading: `spandrel.ModelLoader().load_from_file(path)` detects the architecture from the state
dict, so official Real-ESRGAN `.pth` files (with or without the `params_ema` wrapper), ESRGAN-style
and `.safetensors` files all work (docs/textfix.md). spandrel is imported lazily: the rest of vividvr
does not need it (nor torchvision, which `import spandrel` pulls in).

Numerics (choices, documented in docs/textfix.md):
* we call the raw network (`descriptor.model(x)`), not the descriptor itself, which clamps every
  call's output to [0, 1]. Tiles are blended, resized and clamped once at the end, as Real-ESRGAN's
  own inference and the reference's enhancer clamp after their last operation; the text fix resizes
  the raw output before clamping, exactly like the reference.
* tiling: the input is cut into tiles of `tile` x `tile` pixels, spread evenly so that neighbours
  overlap by at least `overlap` pixels; each tile is padded to the model's size requirements
  (reflect, then replicate: spandrel's rule), upscaled, and feathered into the output with weights
  that ramp linearly over `overlap` input pixels at every edge shared with another tile (image
  borders get weight 1); the weighted sum is normalised by the weight sum. With a tile at least as
  large as the frame (or `tile=0`) the output equals the untiled model's output exactly.
* dtype: float16 on CUDA when the architecture supports it (bfloat16, then float32 otherwise),
  float32 elsewhere; the blend accumulates in float32.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vividcli.engines.base import NullProgress, Progress
from vividcli.errors import CheckpointError, UsageError, VividError
from vividcli.media.reader import FrameSource

__all__ = ["RealESRGANEngine", "TiledUpscaler", "load_sr_model", "import_spandrel", "resolve_device_dtype",
           "tile_starts", "DEFAULT_TILE", "DEFAULT_OVERLAP"]

DEFAULT_TILE = 512
DEFAULT_OVERLAP = 16
SPANDREL_HINT = ("pip install 'vividcli[textfix]' (spandrel, with a torchvision that matches your torch; "
                 "docs/textfix.md)")


def brief(exc: BaseException, limit: int = 200) -> str:
    """An exception as one short line: its first line, plus the next one when the first ends in ':'."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    text = " ".join(lines[:2]) if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def import_spandrel() -> Any:
    """`import spandrel`, or a one-line VividError saying what to install."""
    try:
        import spandrel
    except Exception as exc:  # ImportError, or a RuntimeError from a torchvision built for another torch
        raise VividError(f"Real-ESRGAN models need spandrel ({brief(exc)}): {SPANDREL_HINT}") from None
    return spandrel


def load_sr_model(path: str | os.PathLike[str]) -> Any:
    """Load an image-to-image model file with spandrel; returns its `ImageModelDescriptor` (eval mode, CPU).

    Refuses, with a one-line CheckpointError, files that are missing or unreadable, architectures
    spandrel does not know, and models that are not RGB-to-RGB single-image restorers (inpainting,
    face-only and grayscale models).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"super-resolution model not found: {path}")
    spandrel = import_spandrel()
    try:
        descriptor = spandrel.ModelLoader(device="cpu").load_from_file(path)
    except spandrel.UnsupportedModelError:
        raise CheckpointError(f"{path}: not a model architecture spandrel {spandrel.__version__} supports "
                              "(Real-ESRGAN/ESRGAN, SwinIR, HAT, ... see spandrel's list)") from None
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot load as a super-resolution model ({brief(exc)})") from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise CheckpointError(f"{path}: {descriptor.architecture.name} is an inpainting model, "
                              "not a super-resolution model")
    if descriptor.purpose not in ("SR", "Restoration"):
        raise CheckpointError(f"{path}: {descriptor.architecture.name} is a {descriptor.purpose} model "
                              "(it expects aligned faces), not a whole-frame super-resolution model")
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise CheckpointError(f"{path}: {descriptor.architecture.name} maps {descriptor.input_channels} to "
                              f"{descriptor.output_channels} channels; only RGB-to-RGB models are supported")
    descriptor.eval()
    return descriptor


def resolve_device_dtype(descriptor: Any, device: str | torch.device | None,
                         dtype: torch.dtype | str | None) -> tuple[torch.device, torch.dtype]:
    """The device (default: CUDA when available) and dtype (default: fp16 on CUDA if supported, else fp32)."""
    dev = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {dev} requested, but this torch ({torch.__version__}) sees no CUDA GPU")
    if isinstance(dtype, str):
        names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
                 "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
        if dtype.lower() not in names:
            raise UsageError(f"unknown dtype {dtype!r} (float32, float16 or bfloat16)")
        dtype = names[dtype.lower()]
    if dtype is None:
        if dev.type != "cuda":
            dtype = torch.float32
        elif descriptor.supports_half:
            dtype = torch.float16
        elif descriptor.supports_bfloat16:
            dtype = torch.bfloat16
        else:
            dtype = torch.float32
    if dtype == torch.float16 and not descriptor.supports_half:
        raise UsageError(f"{descriptor.architecture.name} does not support float16; use float32 or bfloat16")
    if dtype == torch.bfloat16 and not descriptor.supports_bfloat16:
        raise UsageError(f"{descriptor.architecture.name} does not support bfloat16; use float32")
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise UsageError(f"unsupported dtype {dtype} (float32, float16 or bfloat16)")
    return dev, dtype


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size `tile` covering [0, length), evenly spread, neighbours overlapping
    by at least `overlap` (one tile at 0 when `length <= tile`)."""
    if length <= tile:
        return [0]
    n = math.ceil((length - overlap) / (tile - overlap))
    n = max(n, 2)
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def _ramp(n: int, overlap: int, rise: bool, fall: bool) -> torch.Tensor:
    """1-D blend weights of one tile side: linear ramps over `overlap` pixels at shared edges, else 1."""
    w = torch.ones(n, dtype=torch.float32)
    r = min(overlap, n)
    if r > 0:
        up = (torch.arange(r, dtype=torch.float32) + 0.5) / r
        if rise:
            w[:r] = torch.minimum(w[:r], up)
        if fall:
            w[n - r:] = torch.minimum(w[n - r:], up.flip(0))
    return w


class TiledUpscaler:
    """Run a spandrel image model over a [1, 3, H, W] tensor in overlapping tiles; raw (unclamped) output.

    `tile` and `overlap` are in input pixels; `tile=0` runs the whole frame at once.
    """

    def __init__(self, descriptor: Any, device: torch.device, dtype: torch.dtype,
                 tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP):
        tile, overlap = int(tile), int(overlap)
        if tile < 0 or overlap < 0:
            raise UsageError(f"tile ({tile}) and overlap ({overlap}) must be >= 0")
        if tile and tile <= 2 * overlap:
            raise UsageError(f"tile size {tile} must be larger than twice the overlap ({overlap}), or 0 for no tiling")
        self.descriptor = descriptor
        self.model = descriptor.model
        self.scale = int(descriptor.scale)
        self.device, self.dtype = device, dtype
        self.tile, self.overlap = tile, overlap
        self.model.to(device=device, dtype=dtype).eval()

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """One tile [1, 3, h, w] (on device, model dtype) -> raw [1, 3, h*s, w*s]."""
        h, w = x.shape[-2:]
        pad_w, pad_h = self.descriptor.size_requirements.get_padding(w, h)
        if pad_w or pad_h:  # reflect as far as allowed, then replicate (spandrel's own rule)
            rw, rh = min(pad_w, w - 1), min(pad_h, h - 1)
            x = F.pad(x, (0, rw, 0, rh), mode="reflect") if (rw or rh) else x
            if pad_w - rw or pad_h - rh:
                x = F.pad(x, (0, pad_w - rw, 0, pad_h - rh), mode="replicate")
        y = self.model(x)
        s = self.scale
        if y.shape[-2:] != (x.shape[-2] * s, x.shape[-1] * s):
            raise VividError(f"{self.descriptor.architecture.name} returned {tuple(y.shape[-2:])} for a "
                             f"{tuple(x.shape[-2:])} input, not x{s}")
        return y[..., : h * s, : w * s]

    @torch.inference_mode()
    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """[1, 3, H, W] float in [0, 1] (any device/dtype) -> raw float32 [1, 3, H*s, W*s] on `device`."""
        x = image.to(device=self.device, dtype=self.dtype)
        _, _, h, w = x.shape
        s = self.scale
        if not self.tile or (h <= self.tile and w <= self.tile):
            return self._run(x).float()
        t, o = self.tile, self.overlap
        ys, xs = tile_starts(h, t, o), tile_starts(w, t, o)
        out = torch.zeros((1, 3, h * s, w * s), dtype=torch.float32, device=self.device)
        weight = torch.zeros((1, 1, h * s, w * s), dtype=torch.float32, device=self.device)
        for i, y0 in enumerate(ys):
            th = min(t, h - y0)
            wy = _ramp(th * s, o * s, rise=i > 0, fall=i < len(ys) - 1)
            for j, x0 in enumerate(xs):
                tw = min(t, w - x0)
                wx = _ramp(tw * s, o * s, rise=j > 0, fall=j < len(xs) - 1)
                wt = (wy[:, None] * wx[None, :]).to(self.device)[None, None]
                y = self._run(x[..., y0 : y0 + th, x0 : x0 + tw]).float()
                out[..., y0 * s : (y0 + th) * s, x0 * s : (x0 + tw) * s] += y * wt
                weight[..., y0 * s : (y0 + th) * s, x0 * s : (x0 + tw) * s] += wt
        return out.div_(weight)


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
