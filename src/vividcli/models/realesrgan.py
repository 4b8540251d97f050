"""Real-ESRGAN-family image models through spandrel: loading, device/dtype choice, tiled inference.

Used by the Real-ESRGAN engine (`engines/realesrgan.py`) and the text fix (`stages/textfix.py`).

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

import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vividcli.config import SR_DEFAULT_TILE, SR_TILE_OVERLAP
from vividcli.devices import resolve_device, resolve_dtype
from vividcli.errors import CheckpointError, UsageError, VividError, describe_exception

__all__ = ["TiledUpscaler", "load_sr_model", "import_spandrel", "resolve_device_dtype", "tile_starts",
           "DEFAULT_TILE", "DEFAULT_OVERLAP"]

DEFAULT_TILE, DEFAULT_OVERLAP = SR_DEFAULT_TILE, SR_TILE_OVERLAP
SPANDREL_HINT = ("pip install 'vividcli[textfix]' (spandrel, with a torchvision that matches your torch; "
                 "docs/textfix.md)")


def import_spandrel() -> Any:
    """`import spandrel`, or a one-line VividError saying what to install."""
    try:
        import spandrel
    except Exception as exc:  # ImportError, or a RuntimeError from a torchvision built for another torch
        raise VividError(f"Real-ESRGAN models need spandrel ({describe_exception(exc, 200)}): {SPANDREL_HINT}") from None
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
        raise CheckpointError(f"{path}: cannot load as a super-resolution model ({describe_exception(exc, 200)})") from None
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
    dev = resolve_device(device)
    if isinstance(dtype, str):
        dtype = resolve_dtype(dtype, dev)
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
