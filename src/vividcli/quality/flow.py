"""Temporal consistency: flow-warping error and flicker of consecutive frames (docs/metrics.md).

Optical flow is OpenCV's DIS (Kroeger et al. 2016; no weights, deterministic), computed on luma
at most FLOW_SHORT_SIDE pixels on the short side and scaled up. Occlusions follow the
forward-backward check of Ruder et al. 2016, as Lai et al. 2018 use for their warping error:
a pixel is kept when its backward flow and the forward flow where it lands cancel out, and its
match lies inside the frame.

For frames t-1, t of a video V, with W the warp of V_{t-1} onto frame t and M the kept pixels:
    warp_error_t = sum_M ||V_t - W(V_{t-1})||² / |M|    (squared L2 over RGB in [0, 1])
    flicker_t    = 255 * |mean_M (Y_t - W(Y_{t-1}))|   (the brightness jump, in 8-bit levels)
"""

from __future__ import annotations

import cv2
import numpy as np

from vividcli.quality.metrics import luma_difference

__all__ = ["FlowEstimator", "TemporalMeter", "FLOW_SHORT_SIDE"]

FLOW_SHORT_SIDE = 360
"""Flow is estimated with the short side at most this size: DIS at 360p takes ~6 ms per field
here and is steadier on noisy frames than at full size; the field is smooth, so enlarging it
costs little accuracy."""


def _gray8(y: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (y.shape[1], y.shape[0]) != size:
        y = cv2.resize(y, size, interpolation=cv2.INTER_AREA)
    return np.clip(y * np.float32(255) + np.float32(0.5), 0, 255).astype(np.uint8)


_SUM2 = np.ones((1, 2), np.float32)
_SUM3 = np.ones((1, 3), np.float32)


def _channel_sum(img: np.ndarray, ones: np.ndarray) -> np.ndarray:
    """Sum over the channel axis (OpenCV: much faster than numpy's reduction over the last axis)."""
    return cv2.transform(img, ones).reshape(img.shape[:2])


class FlowEstimator:
    """Backward flow (frame t -> t-1) and an occlusion mask, at the size of the measured frames.

    The forward-backward check runs at the flow's own (small) size; its pixel threshold 0.5 is
    scaled by the size factor squared so that it means half a pixel² of the full frame.
    """

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        f = min(1.0, FLOW_SHORT_SIDE / min(width, height))
        self.small = (max(8, round(width * f)), max(8, round(height * f)))
        self.factor = (width / self.small[0], height / self.small[1])
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
        self._base = self._grid(width, height)
        self._base_small = self._grid(*self.small)
        self._prev: np.ndarray | None = None

    @staticmethod
    def _grid(width: int, height: int) -> np.ndarray:
        xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
        return np.dstack([xs, ys])

    def _kept(self, back: np.ndarray, fwd: np.ndarray) -> np.ndarray:
        """uint8 mask (1 = kept) at the small size."""
        w, h = self.small
        where = cv2.add(self._base_small, back)
        fwd_there = cv2.remap(fwd, where, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        loop = cv2.add(back, fwd_there)
        spread = cv2.add(cv2.multiply(back, back), cv2.multiply(fwd_there, fwd_there))
        excess = _channel_sum(cv2.subtract(cv2.multiply(loop, loop), cv2.multiply(spread, 0.01)), _SUM2)
        threshold = 0.5 / (self.factor[0] * self.factor[1])
        inside = ((where[..., 0] >= 0) & (where[..., 0] <= w - 1) & (where[..., 1] >= 0) & (where[..., 1] <= h - 1))
        return ((excess <= threshold) & inside).astype(np.uint8)

    def push(self, luma: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Feed the luma (`to_y`) of frame t of the flow source; returns (sampling map into frame
        t-1, uint8 kept-pixel mask) for the pair (t-1, t), or None for the first frame."""
        gray = _gray8(luma, self.small)
        prev, self._prev = self._prev, gray
        if prev is None:
            return None
        back = self._dis.calc(gray, prev, None)
        kept = self._kept(back, self._dis.calc(prev, gray, None))
        size = (self.width, self.height)
        if size != self.small:
            back = cv2.resize(back, size, interpolation=cv2.INTER_LINEAR)
            back = cv2.multiply(back, (self.factor[0], self.factor[1], 0, 0))
            kept = cv2.resize(kept, size, interpolation=cv2.INTER_NEAREST)
        return cv2.add(self._base, back), kept


class TemporalMeter:
    """Warping error and flicker of one video, one frame at a time, given the shared flow."""

    def __init__(self) -> None:
        self._prev: np.ndarray | None = None

    def push(self, frame: np.ndarray, flow: tuple[np.ndarray, np.ndarray] | None) -> dict[str, float | None]:
        prev, self._prev = self._prev, frame
        if prev is None or flow is None:
            return {"warp_error": None, "flicker": None}
        where, kept = flow
        if not cv2.countNonZero(kept):  # everything occluded (a cut): the pair says nothing
            return {"warp_error": None, "flicker": None}
        warped = cv2.remap(prev, where, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        diff = cv2.subtract(frame, warped)
        err = _channel_sum(cv2.multiply(diff, diff), _SUM3)
        luma = luma_difference(frame, warped)
        return {"warp_error": cv2.mean(err, mask=kept)[0], "flicker": abs(cv2.mean(luma, mask=kept)[0]) * 255.0}
