"""Composing comparison frames: panels side by side, in a grid, split or behind a moving slider,
with labels drawn in a bundled font (matplotlib's DejaVu Sans, loaded from its package)."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["Layout", "label_sprite", "font", "LAYOUTS", "GAP"]

LAYOUTS = ("side", "grid", "split", "slider")
GAP = 4  # pixels between panels (even, so that even panels give an even canvas)
SLIDER_PERIOD_S = 4.0  # one sweep of the slider there and back


@functools.cache
def font(size: int) -> ImageFont.ImageFont:
    """DejaVu Sans Bold (shipped inside matplotlib, Bitstream Vera licence), else Pillow's own font."""
    try:
        import matplotlib

        path = f"{matplotlib.get_data_path()}/fonts/ttf/DejaVuSans-Bold.ttf"
        return ImageFont.truetype(path, size)
    except (ImportError, OSError):
        return ImageFont.load_default(size)


def label_sprite(text: str, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(RGB float32, alpha float32 HxWx1) of `text` in white on a translucent dark box, sized for a
    panel `height` pixels tall."""
    size = max(11, round(height / 20))
    f = font(size)
    left, top, right, bottom = f.getbbox(text)
    pad = max(2, size // 4)
    w, h = right - left + 2 * pad, bottom - top + 2 * pad
    image = Image.new("RGBA", (w, h), (0, 0, 0, 150))
    ImageDraw.Draw(image).text((pad - left, pad - top), text, font=f, fill=(255, 255, 255, 255))
    rgba = np.asarray(image, dtype=np.float32) / 255.0
    return rgba[..., :3].copy(), rgba[..., 3:].copy()


def _paste(canvas: np.ndarray, sprite: tuple[np.ndarray, np.ndarray], x: int, y: int) -> None:
    """Alpha-blend `sprite` onto `canvas` at (x, y), clipped to the canvas."""
    rgb, alpha = sprite
    h = min(rgb.shape[0], canvas.shape[0] - y)
    w = min(rgb.shape[1], canvas.shape[1] - x)
    if h <= 0 or w <= 0:
        return
    region = canvas[y:y + h, x:x + w]
    region[:] = region * (1 - alpha[:h, :w]) + rgb[:h, :w] * alpha[:h, :w]


@dataclass
class Layout:
    """Places n panels of panel_w x panel_h (even sizes) on one canvas, with their labels."""

    kind: str
    labels: list[str]
    panel_w: int
    panel_h: int
    fps: float = 24.0

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.kind in ("split", "slider"):  # one frame shared by all inputs
            self.cols = self.rows = 1
        else:
            self.cols = math.ceil(math.sqrt(n)) if self.kind == "grid" else n
            self.rows = math.ceil(n / self.cols)
        self.width = self.cols * self.panel_w + (self.cols - 1) * GAP
        self.height = self.rows * self.panel_h + (self.rows - 1) * GAP
        self.sprites = [label_sprite(text, self.panel_h) for text in self.labels]
        self.margin = max(2, self.panel_h // 60) * 2

    def compose(self, panels: list[np.ndarray], t: int) -> np.ndarray:
        """The canvas for frame t from the n panels (float32 RGB, panel-sized)."""
        if self.kind in ("split", "slider"):
            return self._split(panels, t)
        canvas = np.zeros((self.height, self.width, 3), np.float32)
        for i, (panel, sprite) in enumerate(zip(panels, self.sprites)):
            x = (i % self.cols) * (self.panel_w + GAP)
            y = (i // self.cols) * (self.panel_h + GAP)
            canvas[y:y + self.panel_h, x:x + self.panel_w] = panel
            _paste(canvas, sprite, x + self.margin, y + self.margin)
        return canvas

    def boundaries(self, t: int) -> list[int]:
        """x positions where one input gives way to the next (split: fixed; slider: moving)."""
        n, w = len(self.labels), self.panel_w
        if self.kind == "slider":
            phase = 2 * math.pi * t / max(1.0, SLIDER_PERIOD_S * self.fps)
            return [round(w * (0.5 - 0.4 * math.cos(phase)))]
        return [round(w * i / n) for i in range(1, n)]

    def _split(self, panels: list[np.ndarray], t: int) -> np.ndarray:
        edges = [0, *self.boundaries(t), self.panel_w]
        canvas = np.empty((self.panel_h, self.panel_w, 3), np.float32)
        for panel, x0, x1 in zip(panels, edges, edges[1:]):
            canvas[:, x0:x1] = panel[:, x0:x1]
        for x in edges[1:-1]:
            cv2.line(canvas, (x, 0), (x, self.panel_h - 1), (1.0, 1.0, 1.0), max(1, self.panel_h // 240))
        last = len(panels) - 1
        for i, sprite in enumerate(self.sprites):
            if self.kind == "slider" and i == last:  # the right-hand input is labelled at the right edge
                x = self.panel_w - sprite[0].shape[1] - self.margin
            else:
                x = min(edges[i] + self.margin, self.panel_w - sprite[0].shape[1] - self.margin)
            _paste(canvas, sprite, max(0, x), self.margin)
        return canvas
