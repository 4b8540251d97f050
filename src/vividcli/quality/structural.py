"""CreativeVR-style structural degradations, temporally coherent (docs/degrade.md).

Per frame: a smooth "morphing" displacement (a few bicubic control points) plus a grid warp
(a finer piecewise-bilinear mesh), applied as one remap; then a directional motion blur whose
length and angle drift over time and which switches on and off smoothly. Across frames: dropped
frames and temporally downsampled segments, both shown as a repeat of the previous output frame so
the frame count and timing stay exact.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import cv2
import numpy as np

from vividcli.quality.presets import StructuralLevel
from vividcli.quality.tracks import SmoothField, SmoothScalar, rng_for

__all__ = ["StructuralDegrader", "line_kernel", "directional_blur"]

MAX_TAPS = 11
"""Longest line kernel applied in one filter2D pass: OpenCV switches to a DFT above 11x11, which
is ~7x slower at 720p; longer blurs run as several shorter passes (docs/degrade.md)."""

FIELD_STEP = 8
"""Displacement fields are built at 1/8 of the frame size, then enlarged bilinearly."""


def line_kernel(length: float, angle: float) -> np.ndarray:
    """A normalised, anti-aliased line kernel of `length` pixels at `angle` radians (odd size)."""
    size = min(MAX_TAPS, 2 * math.ceil(length / 2) + 1)
    kernel = np.zeros((size, size), np.float32)
    c = size // 2
    n = max(2, math.ceil(length * 4))
    for s in np.linspace(-(length - 1) / 2, (length - 1) / 2, n):
        x, y = c + s * math.cos(angle), c + s * math.sin(angle)
        x0, y0 = min(int(math.floor(x)), size - 2), min(int(math.floor(y)), size - 2)
        fx, fy = x - x0, y - y0
        kernel[y0, x0] += (1 - fx) * (1 - fy)
        kernel[y0, x0 + 1] += fx * (1 - fy)
        kernel[y0 + 1, x0] += (1 - fx) * fy
        kernel[y0 + 1, x0 + 1] += fx * fy
    return kernel / kernel.sum()


def directional_blur(frame: np.ndarray, length: float, angle: float) -> np.ndarray:
    """Blur along `angle` over about `length` pixels; lengths above MAX_TAPS use n passes of
    length (L + n - 1) / n each (a box convolved with itself: a trapezoid-shaped streak)."""
    if length < 1.0:
        return frame
    passes = max(1, math.ceil((length - 1) / (MAX_TAPS - 1)))
    kernel = line_kernel((length + passes - 1) / passes, angle)
    for _ in range(passes):
        frame = cv2.filter2D(frame, -1, kernel, borderType=cv2.BORDER_REFLECT101)
    return frame


def _coarse_shape(cells: int, width: int, height: int) -> tuple[int, int]:
    """(rows, cols) of control points: `cells` across the short side, as square as possible."""
    short, long_ = min(width, height), max(width, height)
    across_long = max(1, round(cells * long_ / short))
    rows, cols = (cells, across_long) if height <= width else (across_long, cells)
    return rows + 1, cols + 1


class StructuralDegrader:
    """Degrades a stream of float32 RGB frames (HxWx3 in [0, 1]) at one StructuralLevel."""

    def __init__(self, level: StructuralLevel, *, seed: int, width: int, height: int, fps: float):
        self.level, self.seed, self.width, self.height = level, seed, width, height
        short = min(width, height)
        self.period = max(1.0, level.period_s * fps)
        self.morph_px, self.grid_px, self.blur_px = level.morph * short, level.grid * short, level.blur * short
        self.morph = SmoothField(seed, "morph", (*_coarse_shape(level.morph_cells, width, height), 2), 2 * self.period)
        self.grid = SmoothField(seed, "grid", (*_coarse_shape(level.grid_cells, width, height), 2), self.period)
        self.blur_on = SmoothScalar(seed, "blur-on", 0.0, 1.0, self.period)
        self.blur_angle = SmoothScalar(seed, "blur-angle", 0.0, 2 * math.pi, 2 * self.period)
        xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
        self._base = np.dstack([xs, ys])  # the identity map for cv2.remap

    # ------------------------------------------------------------------ schedule

    def repeats(self, t: int) -> bool:
        """True if output frame t repeats output frame t-1 (a dropped or temporally held frame)."""
        if t == 0:
            return False
        level = self.level
        if level.drop > 0 and rng_for(self.seed, "drop", t).random() < level.drop:
            return True
        if level.hold > 1 and level.hold_share > 0:
            segment = int(t // self.period)
            held = rng_for(self.seed, "hold", segment).random() < level.hold_share
            offset = t - math.ceil(segment * self.period)
            return held and offset % level.hold != 0
        return False

    def blur_length(self, t: int) -> float:
        """Motion-blur length at frame t in pixels: zero while the smooth on/off track is low."""
        duty = self.level.blur_duty
        if duty <= 0:
            return 0.0
        on = (self.blur_on.unit(t) - (1.0 - duty)) / duty
        return self.blur_px * max(0.0, on)

    # ------------------------------------------------------------------ frames

    def displacement(self, t: int) -> np.ndarray:
        """HxWx2 displacement in pixels at frame t (morph + grid warp).

        Both fields are built at 1/FIELD_STEP of the frame size (bicubic and bilinear from their
        control points), summed, and enlarged once, bilinearly: at that density the enlargement
        is indistinguishable from building them at full size, for a third of the cost.
        """
        small = (max(2, self.width // FIELD_STEP), max(2, self.height // FIELD_STEP))
        morph = cv2.resize(self.morph(t) * np.float32(self.morph_px), small, interpolation=cv2.INTER_CUBIC)
        grid = cv2.resize(self.grid(t) * np.float32(self.grid_px), small, interpolation=cv2.INTER_LINEAR)
        return cv2.resize(morph + grid, (self.width, self.height), interpolation=cv2.INTER_LINEAR)

    def degrade(self, frame: np.ndarray, t: int) -> np.ndarray:
        """The structurally degraded frame t (ignores the drop/hold schedule)."""
        warped = cv2.remap(frame, cv2.add(self._base, self.displacement(t)), None, cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT101)
        return directional_blur(warped, self.blur_length(t), self.blur_angle(t))

    def __call__(self, frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        """Degraded frames, one per input frame; repeated frames are the previous output object."""
        last = None
        for t, frame in enumerate(frames):
            if last is None or not self.repeats(t):
                last = self.degrade(frame, t)
            yield last
