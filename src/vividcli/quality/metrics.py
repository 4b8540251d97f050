"""Full-reference metrics of one frame pair: PSNR and SSIM on RGB and on Y (docs/metrics.md).

PSNR is scikit-image's `peak_signal_noise_ratio` (data range 1). SSIM follows scikit-image's
`structural_similarity` with the settings of Wang et al. 2004 (Gaussian window sigma 1.5,
K1 0.01, K2 0.03, population covariance, data range 1, the 5-pixel border the window does not
cover left out), computed with OpenCV's Gaussian filter on RGB and Y at once: scikit-image's own
call takes ~400 ms per 720p RGB frame on this machine (SciPy filters, one thread), which alone
would miss the eval speed target; OpenCV's takes ~30 ms. The test suite checks that both give the
same values on the same frames.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["to_y", "luma_difference", "psnr", "ssim_per_channel", "frame_metrics", "PSNR_CAP_DB", "SSIM_SIGMA",
           "SSIM_WIN"]

PSNR_CAP_DB = 100.0
"""Identical frames have an infinite PSNR; summaries and files report them as 100 dB and say so."""

SSIM_SIGMA = 1.5
SSIM_WIN = 11  # scikit-image: 2 * int(3.5 * sigma + 0.5) + 1
_K1, _K2 = 0.01, 0.03
_Y_ROW = np.array([[65.481, 128.553, 24.966]], np.float32) / np.float32(255.0)


def to_y(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma, studio swing (16-235 on 8 bits), as MATLAB's rgb2ycbcr and the
    super-resolution literature compute "PSNR on Y": float32 in [16/255, 235/255]."""
    y = cv2.transform(rgb, _Y_ROW)  # HxW (OpenCV drops the single channel axis)
    return y.reshape(rgb.shape[:2]) + np.float32(16.0 / 255.0)


def luma_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """to_y(a) - to_y(b), in one pass (luma is linear in RGB; the offsets cancel)."""
    return cv2.transform(cv2.subtract(a, b), _Y_ROW).reshape(a.shape[:2])


def psnr(ref: np.ndarray, out: np.ndarray) -> float:
    """PSNR in dB over all pixels and channels, data range 1 (inf for identical images)."""
    if np.array_equal(ref, out):
        return math.inf  # scikit-image divides by zero here (and warns); the answer is known
    from skimage.metrics import peak_signal_noise_ratio  # imports SciPy: ~4 s, so only when measuring

    return float(peak_signal_noise_ratio(ref, out, data_range=1.0))


class _SsimBuffers:
    """Work arrays for one frame shape, reused frame after frame: allocating a dozen fresh 720p
    arrays per frame costs more (page faults) than the arithmetic itself."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = shape
        self.ux, self.uy, self.vx, self.vy, self.vxy, self.tmp = (np.empty(shape, np.float32) for _ in range(6))

    def blur(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(src, (SSIM_WIN, SSIM_WIN), SSIM_SIGMA, dst=dst, borderType=cv2.BORDER_REFLECT)

    def ssim(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        ux, uy, vx, vy, vxy, tmp = self.ux, self.uy, self.vx, self.vy, self.vxy, self.tmp
        self.blur(x, ux), self.blur(y, uy)
        for a, b, dst in ((x, x, vx), (y, y, vy), (x, y, vxy)):
            np.multiply(a, b, out=tmp)
            self.blur(tmp, dst)
        # v* = E[ab] - E[a]E[b]; then S = (2 ux uy + C1)(2 vxy + C2) / ((ux² + uy² + C1)(vx + vy + C2))
        np.multiply(ux, uy, out=tmp)
        np.subtract(vxy, tmp, out=vxy)
        np.multiply(vxy, np.float32(2), out=vxy)
        np.add(vxy, np.float32(_K2 ** 2), out=vxy)  # A2
        np.multiply(tmp, np.float32(2), out=tmp)
        np.add(tmp, np.float32(_K1 ** 2), out=tmp)  # A1
        np.multiply(tmp, vxy, out=vxy)  # numerator
        np.add(vx, vy, out=vx)
        np.multiply(ux, ux, out=ux)
        np.multiply(uy, uy, out=uy)
        np.add(ux, uy, out=ux)  # ux² + uy²
        np.subtract(vx, ux, out=vx)  # vx + vy (the blurred squares minus the squared means)
        np.add(vx, np.float32(_K2 ** 2), out=vx)  # B2
        np.add(ux, np.float32(_K1 ** 2), out=ux)  # B1
        np.multiply(ux, vx, out=ux)
        np.divide(vxy, ux, out=vxy)
        pad = (SSIM_WIN - 1) // 2
        channels = 1 if x.ndim == 2 else x.shape[2]
        return np.array(cv2.mean(vxy[pad:-pad, pad:-pad])[:channels])


_buffers: dict[tuple[int, ...], _SsimBuffers] = {}


def ssim_per_channel(ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Mean SSIM of each channel of two float32 HxW or HxWxC images in [0, 1] (C <= 4)."""
    if ref.shape not in _buffers:
        if len(_buffers) > 4:
            _buffers.clear()
        _buffers[ref.shape] = _SsimBuffers(ref.shape)
    return _buffers[ref.shape].ssim(ref.astype(np.float32, copy=False), out.astype(np.float32, copy=False))


def frame_metrics(ref: np.ndarray, out: np.ndarray, y_ref: np.ndarray | None = None,
                  y_out: np.ndarray | None = None) -> dict[str, float]:
    """psnr, psnr_y, ssim, ssim_y of `out` against `ref` (float32 RGB HxWx3 in [0, 1], same size);
    pass their `to_y` lumas if already computed."""
    if min(ref.shape[:2]) < SSIM_WIN:
        raise ValueError(f"frames of {ref.shape[1]}x{ref.shape[0]} are smaller than the SSIM window ({SSIM_WIN})")
    y_ref = to_y(ref) if y_ref is None else y_ref
    y_out = to_y(out) if y_out is None else y_out
    return {"psnr": psnr(ref, out), "psnr_y": psnr(y_ref, y_out),
            "ssim": float(ssim_per_channel(ref, out).mean()), "ssim_y": float(ssim_per_channel(y_ref, y_out)[0])}
