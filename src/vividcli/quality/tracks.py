"""Deterministic random parameters that drift smoothly over time.

A degradation that redraws its parameters every frame looks like noise, not like a failure of a
generator or a camera; CreativeVR's degradation module and RealBasicVSR's per-frame parameter
steps both make parameters evolve over time instead. Here every random quantity is a function of
(seed, stream name, keyframe index): keyframes lie `period` frames apart and values between them
are blended with a smoothstep. Any frame's value is computed on demand in O(1) memory, in any
order, and reruns with the same seed are bit-identical.
"""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["rng_for", "SmoothScalar", "SmoothField"]


def rng_for(seed: int, stream: str, index: int) -> np.random.Generator:
    """An independent generator for (seed, stream, index); `stream` names what it is drawn for."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(stream.encode()), index]))


def _blend_weight(t: float, period: float) -> tuple[int, float]:
    """(keyframe before t, smoothstep weight of the keyframe after it)."""
    k = int(np.floor(t / period))
    u = t / period - k
    return k, u * u * (3.0 - 2.0 * u)


class SmoothScalar:
    """A value in [lo, hi] that wanders smoothly: uniform keyframes `period` frames apart."""

    def __init__(self, seed: int, stream: str, lo: float, hi: float, period: float):
        self.seed, self.stream, self.lo, self.hi = seed, stream, float(lo), float(hi)
        self.period = max(float(period), 1.0)

    def _key(self, k: int) -> float:
        return float(rng_for(self.seed, self.stream, k).random())

    def unit(self, t: float) -> float:
        """The track's position in [0, 1] at frame t."""
        k, w = _blend_weight(t, self.period)
        return (1.0 - w) * self._key(k) + w * self._key(k + 1)

    def __call__(self, t: float) -> float:
        return self.lo + (self.hi - self.lo) * self.unit(t)


class SmoothField:
    """A coarse random array (e.g. a displacement grid) of standard-normal entries that morphs
    smoothly from one keyframe to the next.

    Blending two independent normal keyframes with weights (1-w, w) would shrink the variance
    mid-way to (1-w)² + w² (half at w = 0.5), making the effect pulse; dividing by its square
    root keeps every frame at unit variance.
    """

    def __init__(self, seed: int, stream: str, shape: tuple[int, ...], period: float):
        self.seed, self.stream, self.shape = seed, stream, tuple(shape)
        self.period = max(float(period), 1.0)
        self._cache: dict[int, np.ndarray] = {}

    def _key(self, k: int) -> np.ndarray:
        if k not in self._cache:
            if len(self._cache) > 4:  # frames arrive in order: only neighbouring keyframes are reused
                self._cache.clear()
            self._cache[k] = rng_for(self.seed, self.stream, k).standard_normal(self.shape).astype(np.float32)
        return self._cache[k]

    def __call__(self, t: float) -> np.ndarray:
        k, w = _blend_weight(t, self.period)
        norm = np.float32(1.0 / np.sqrt((1.0 - w) ** 2 + w ** 2))
        return (np.float32(1.0 - w) * self._key(k) + np.float32(w) * self._key(k + 1)) * norm
