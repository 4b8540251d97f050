"""The real-world photometric chain of Real-ESRGAN / RealBasicVSR, one video at a time.

Order (RealBasicVSR's first-order pipeline): Gaussian blur -> downscale -> noise -> JPEG ->
video codec (libx264 at a CRF, a real encode and decode through PyAV, in memory) -> resize to the
output size. Blur, noise and JPEG strengths drift smoothly over time; the downscale factor and
its interpolation are drawn once per video, as RealBasicVSR does, since a codec cannot change
size mid-stream. Noise itself is fresh every frame (it is noise), seeded per frame.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction

import av
import cv2
import numpy as np
from av.video.reformatter import Interpolation

from vividcli.errors import MediaError
from vividcli.quality.presets import PhotometricLevel
from vividcli.quality.tracks import SmoothScalar, rng_for

__all__ = ["PhotometricDegrader", "CodecPass", "to_uint8", "to_float"]

_DOWN_MODES = (cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_CUBIC)  # RealBasicVSR: area, bilinear, bicubic
_CODEC_FLAGS = Interpolation.BICUBIC | Interpolation.ACCURATE_RND
_YUV = {"dst_colorspace": "ITU601", "dst_color_range": "MPEG"}


def to_uint8(frame: np.ndarray) -> np.ndarray:
    """float RGB in [0, 1] -> uint8, rounded to nearest (as the project's writer quantises)."""
    return np.floor(np.clip(frame, 0.0, 1.0) * np.float32(255) + np.float32(0.5)).astype(np.uint8)


def to_float(frame: np.ndarray) -> np.ndarray:
    return frame.astype(np.float32) / np.float32(255)


class PhotometricDegrader:
    """Blur, downscale, noise and JPEG of one frame; `size` is the (width, height) after downscaling."""

    def __init__(self, level: PhotometricLevel, *, seed: int, width: int, height: int, fps: float):
        self.level, self.seed = level, seed
        period = max(1.0, level.period_s * fps)
        draw = rng_for(seed, "photometric-video", 0)
        factor = float(draw.uniform(*level.scale))
        self.down_mode = _DOWN_MODES[int(draw.integers(len(_DOWN_MODES)))]
        self.gray_noise = bool(draw.random() < level.gray_noise)
        self.size = (max(2, round(width * factor)), max(2, round(height * factor)))
        self.sigma = SmoothScalar(seed, "blur-sigma", *level.blur_sigma, period)
        self.noise = SmoothScalar(seed, "noise-sigma", *level.noise_sigma, period)
        self.jpeg = SmoothScalar(seed, "jpeg-quality", level.jpeg[0], level.jpeg[1] + 0.999, period)

    def __call__(self, frame: np.ndarray, t: int) -> np.ndarray:
        """float32 RGB in [0, 1] at the input size -> uint8 RGB at `self.size`."""
        out = cv2.GaussianBlur(frame, (0, 0), self.sigma(t), borderType=cv2.BORDER_REFLECT101)
        out = cv2.resize(out, self.size, interpolation=self.down_mode)
        h, w = out.shape[:2]
        rng = rng_for(self.seed, "noise", t)
        noise = rng.standard_normal((h, w, 1) if self.gray_noise else (h, w, 3), dtype=np.float32)
        out = out + noise * np.float32(self.noise(t) / 255.0)
        bgr = cv2.cvtColor(to_uint8(out), cv2.COLOR_RGB2BGR)  # OpenCV's JPEG expects BGR order
        ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(self.jpeg(t))])
        if not ok:
            raise MediaError(f"JPEG encoding of frame {t} failed")
        return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


class CodecPass:
    """Encode uint8 RGB frames with libx264 at `crf` and decode them again, streaming.

    The encoder holds a few frames (lookahead, B-frames), so output lags input by a bounded
    number of frames; every input frame comes out exactly once, in order. Odd sizes are padded
    by edge replication for 4:2:0 and cropped back.
    """

    def __init__(self, *, width: int, height: int, fps: Fraction, crf: int, preset: str = "veryfast"):
        self.width, self.height = width, height
        self._enc = av.CodecContext.create("libx264", "w")
        self._enc.width, self._enc.height = width + width % 2, height + height % 2
        self._enc.pix_fmt = "yuv420p"
        self._enc.time_base = 1 / Fraction(fps)
        self._enc.framerate = Fraction(fps)
        # fixed thread count: x264's output depends on it, so reruns on other machines match
        self._enc.options = {"crf": str(crf), "preset": preset, "threads": "4"}
        self._dec = av.CodecContext.create("h264", "r")

    def _decoded(self, packets) -> Iterator[np.ndarray]:
        for packet in packets:
            for frame in self._dec.decode(packet):
                rgb = frame.to_ndarray(format="rgb24", interpolation=_CODEC_FLAGS, src_colorspace="ITU601",
                                       src_color_range="MPEG", dst_colorspace="ITU601", dst_color_range="JPEG")
                yield rgb[: self.height, : self.width]

    def __call__(self, frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        count = out = 0
        pad = ((0, self.height % 2), (0, self.width % 2), (0, 0))
        for count, img in enumerate(frames, 1):
            vf = av.VideoFrame.from_ndarray(np.pad(img, pad, mode="edge") if any(p[1] for p in pad) else img,
                                            format="rgb24")
            vf = vf.reformat(format="yuv420p", interpolation=_CODEC_FLAGS, src_colorspace="ITU601",
                             src_color_range="JPEG", **_YUV)
            vf.pts = count - 1
            for rgb in self._decoded(self._enc.encode(vf)):
                out += 1
                yield rgb
        for rgb in self._decoded([*self._enc.encode(None), None]):
            out += 1
            yield rgb
        if out != count:
            raise MediaError(f"the codec pass returned {out} frames for {count}; please report it")
