"""Tiny clips for the degrade/eval/compare tests, written with PyAV (kept apart from the media
tests' factory, which is being moved)."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

W, H = 64, 48


def texture(width: int = W + 64, height: int = H + 16, seed: int = 0) -> np.ndarray:
    """A smooth random colour texture (float32 RGB in [0, 1]), larger than a frame so it can pan."""
    rng = np.random.default_rng(seed)
    small = rng.random((height // 6 + 2, width // 6 + 2, 3)).astype(np.float32)
    return np.clip(cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC), 0, 1)


def pan(step: int = 2, width: int = W, height: int = H) -> Callable[[int], np.ndarray]:
    """Frame t: the texture shifted left by `step` pixels per frame (a pure global translation)."""
    tex = texture(width + 64, height + 16)
    return lambda t: np.ascontiguousarray(tex[8:8 + height, step * t:step * t + width])


def noisy(sigma: float = 0.1, width: int = W, height: int = H) -> Callable[[int], np.ndarray]:
    """Frame t: a still texture plus fresh noise every frame."""
    still = pan(0, width, height)(0)
    return lambda t: np.clip(still + sigma * np.random.default_rng(100 + t).standard_normal(still.shape), 0, 1)


def write_clip(path: Path, frame: Callable[[int], np.ndarray], frames: int = 12, *, fps: Fraction | int = 24,
               audio: bool = False) -> list[np.ndarray]:
    """Encode frame(0..frames-1); .mkv is lossless RGB (FFV1), .mp4 is H.264 (+ AAC with `audio`).
    Returns the uint8 frames given to the encoder."""
    fps = Fraction(fps)
    out = av.open(str(path), "w")
    lossless = path.suffix == ".mkv"
    first = frame(0)
    v = out.add_stream("ffv1" if lossless else "libx264", rate=fps)
    v.width, v.height = first.shape[1], first.shape[0]
    v.pix_fmt = "bgr0" if lossless else "yuv444p"
    if not lossless:
        v.options = {"qp": "0"}
    a = out.add_stream("aac", rate=48000, layout="mono") if audio else None
    written = []
    for t in range(frames):
        img = np.floor(np.clip(frame(t), 0, 1) * 255 + 0.5).astype(np.uint8)
        written.append(img)
        vf = av.VideoFrame.from_ndarray(img, format="rgb24")
        vf.pts = t
        out.mux(v.encode(vf))
    out.mux(v.encode(None))
    if a is not None:
        total, t = int(frames / fps * 48000), 0
        while t < total:
            n = min(1024, total - t)
            wave = (0.2 * np.sin(np.arange(t, t + n) / 48000 * 2 * np.pi * 440)).astype(np.float32)
            af = av.AudioFrame.from_ndarray(wave[None], format="fltp", layout="mono")
            af.sample_rate, af.pts = 48000, t
            out.mux(a.encode(af))
            t += n
        out.mux(a.encode(None))
    out.close()
    return written


def read_frames(path: Path) -> list[np.ndarray]:
    """All frames as float32 RGB through the project's reader."""
    from vividcli.media.reader import open_source

    return list(open_source(path).frames())


def stream_types(path: Path) -> list[str]:
    with av.open(str(path)) as c:
        return [s.type for s in c.streams]
