"""Degradation levels and presets (docs/degrade.md gives the source of every number).

Structural levels follow CreativeVR's degradation module (morphing, directional motion blur,
grid warping, frame dropping, temporal downsampling at Light/Medium/Strong); photometric levels
follow the Real-ESRGAN / RealBasicVSR real-world chain (blur, downscale, noise, JPEG, a video
codec pass). Spatial sizes of structural effects are fractions of the frame's short side, so a
preset looks alike at 480p and 4K; photometric sizes are in pixels, as in those papers.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["StructuralLevel", "PhotometricLevel", "STRUCTURAL", "PHOTOMETRIC", "PRESETS", "LEVEL_NAMES"]


@dataclass(frozen=True)
class StructuralLevel:
    morph: float  # std of the smooth displacement, fraction of the short side
    morph_cells: int  # control points across the short side of the smooth (bicubic) field
    grid: float  # std of the grid-warp displacement, fraction of the short side
    grid_cells: int  # cells across the short side of the piecewise-bilinear mesh
    blur: float  # longest directional motion blur, fraction of the short side
    blur_duty: float  # share of the time motion blur is on
    drop: float  # probability that a frame is dropped (shows the previous one)
    hold: int  # temporal downsampling factor in affected segments (1: none)
    hold_share: float  # share of segments that are temporally downsampled
    period_s: float = 1.0  # seconds between keyframes of the smooth parameter tracks


@dataclass(frozen=True)
class PhotometricLevel:
    blur_sigma: tuple[float, float]  # Gaussian blur sigma range, pixels
    scale: tuple[float, float]  # downscale factor range (then back up to the output size)
    noise_sigma: tuple[float, float]  # Gaussian noise sigma range, 8-bit levels
    gray_noise: float  # probability that the noise is the same in R, G and B (per video)
    jpeg: tuple[int, int]  # JPEG quality range
    crf: int  # libx264 CRF of the codec pass
    period_s: float = 2.0


STRUCTURAL: dict[str, StructuralLevel | None] = {
    "none": None,
    "light": StructuralLevel(morph=0.004, morph_cells=3, grid=0.002, grid_cells=8, blur=0.006, blur_duty=0.3,
                             drop=0.01, hold=1, hold_share=0.0),
    "medium": StructuralLevel(morph=0.008, morph_cells=3, grid=0.004, grid_cells=8, blur=0.012, blur_duty=0.45,
                              drop=0.03, hold=2, hold_share=0.25),
    "strong": StructuralLevel(morph=0.016, morph_cells=4, grid=0.008, grid_cells=10, blur=0.024, blur_duty=0.6,
                              drop=0.06, hold=3, hold_share=0.4),
}

PHOTOMETRIC: dict[str, PhotometricLevel | None] = {
    "none": None,
    "light": PhotometricLevel(blur_sigma=(0.2, 0.8), scale=(0.7, 0.9), noise_sigma=(1.0, 4.0), gray_noise=0.4,
                              jpeg=(75, 95), crf=23),
    "medium": PhotometricLevel(blur_sigma=(0.5, 1.5), scale=(0.45, 0.7), noise_sigma=(3.0, 10.0), gray_noise=0.4,
                               jpeg=(50, 80), crf=28),
    "strong": PhotometricLevel(blur_sigma=(1.0, 3.0), scale=(0.25, 0.45), noise_sigma=(8.0, 25.0), gray_noise=0.4,
                               jpeg=(30, 60), crf=34),
}

PRESETS: dict[str, tuple[str, str]] = {
    # preset: (structural level, photometric level)
    "light": ("light", "none"),
    "medium": ("medium", "none"),
    "strong": ("strong", "none"),
    "realworld": ("none", "medium"),
}

LEVEL_NAMES = ("none", "light", "medium", "strong")
