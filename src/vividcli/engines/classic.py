"""A weight-free, deterministic "classic" restorer for testing the pipeline and quick previews."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from PIL import Image

from vividcli.errors import UsageError
from vividcli.media.reader import FrameSource
from vividcli.progress import NullProgress, Progress

__all__ = ["ClassicEngine"]


class ClassicEngine:
    """Motion-adaptive temporal denoise, Lanczos resize and a mild unsharp mask. No model, no weights.

    What it is: three textbook filters in float32, deterministic (same input, same output, on
    any machine with the same numpy/Pillow), streaming (it holds one previous frame), and fast
    enough on a CPU to preview a whole clip or to test the CLI, the writer and the batch runner
    end to end without a GPU or downloads.
    What it is not: a neural restorer. It does not remove compression artefacts, invent detail,
    fix faces or text, or do anything Vivid-VR does; its upscale is a plain Lanczos resize.

    Steps per frame:
      1. Temporal denoise at the input size: out = x + k * (prev_out - x), a recursive average with
         the previous *output*, where k = denoise * exp(-(d / motion_threshold)^2) per pixel and
         d = |x - prev_out| averaged over RGB. Where the picture moves (d large) k -> 0, so
         moving edges do not ghost; static noise averages out over frames.
      2. Lanczos resize by `scale` (Pillow, on float32 "F" planes: no 8-bit rounding on the way).
      3. Unsharp mask: out = y + sharpen * (y - gaussian_blur(y)), then clip to [0, 1].
    Any size works, odd ones included (no padding is needed, so none is done).
    """

    name = "classic"

    def __init__(self, scale: float = 2.0, denoise: float = 0.3, sharpen: float = 0.3,
                 motion_threshold: float = 0.04):
        if not scale > 0:
            raise UsageError(f"scale must be positive, not {scale}")
        if not 0.0 <= denoise < 1.0:
            raise UsageError(f"denoise must be in [0, 1), not {denoise}")
        if not sharpen >= 0.0:
            raise UsageError(f"sharpen must be >= 0, not {sharpen}")
        if not motion_threshold > 0:
            raise UsageError(f"motion_threshold must be positive, not {motion_threshold}")
        self.scale, self.denoise, self.sharpen = float(scale), float(denoise), float(sharpen)
        self.motion_threshold = float(motion_threshold)
        self._kernel = _gaussian_kernel(sigma=max(1.0, self.scale / 2))

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """Input size times `scale`, rounded half up, at least 1x1."""
        return max(1, int(width * self.scale + 0.5)), max(1, int(height * self.scale + 0.5))

    def restore(self, source: FrameSource, progress: Progress | None = None) -> Iterator[np.ndarray]:
        """Yield each restored frame as soon as its input frame is read."""
        progress = progress or NullProgress()
        info = source.info
        size = self.output_size(info.width, info.height)
        progress.stage("restore", info.num_frames)
        prev = None
        for frame in source.frames():
            frame = np.asarray(frame, dtype=np.float32)
            prev = frame if prev is None else self._denoise(frame, prev)
            out = self._resize(prev, size)
            if self.sharpen:
                out = out + np.float32(self.sharpen) * (out - _blur(out, self._kernel))
            np.clip(out, 0.0, 1.0, out=out)
            progress.advance(1)  # before the yield: the consumer may never resume us after the last frame
            yield out

    def _denoise(self, frame: np.ndarray, prev: np.ndarray) -> np.ndarray:
        if not self.denoise:
            return frame
        diff = prev - frame
        a = np.abs(diff)
        d = (a[..., 0] + a[..., 1] + a[..., 2]) * np.float32(1 / 3)  # 4x faster than .mean(axis=2)
        k = np.float32(self.denoise) * np.exp(-np.square(d / np.float32(self.motion_threshold)))
        return frame + k[..., None] * diff

    @staticmethod
    def _resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        if (frame.shape[1], frame.shape[0]) == size:
            return frame.copy()
        planes = [np.asarray(Image.fromarray(np.ascontiguousarray(frame[..., c]))
                             .resize(size, Image.Resampling.LANCZOS)) for c in range(3)]
        return np.stack(planes, axis=-1)


def _gaussian_kernel(sigma: float) -> np.ndarray:
    radius = max(1, int(round(2 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    k = np.exp(-0.5 * (x / np.float32(sigma)) ** 2)
    return (k / k.sum()).astype(np.float32)


def _blur(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable Gaussian blur with edge replication (HxWxC float32)."""
    r = len(kernel) // 2
    for axis in (0, 1):
        pad = [(0, 0)] * img.ndim
        pad[axis] = (r, r)
        padded = np.pad(img, pad, mode="edge")
        n = img.shape[axis]

        def tap(i: int) -> np.ndarray:  # a view of `padded` shifted by i along `axis`
            return padded[i : i + n] if axis == 0 else padded[:, i : i + n]

        acc = tap(0) * kernel[0]
        for i in range(1, len(kernel)):
            acc += tap(i) * kernel[i]
        img = acc
    return img
