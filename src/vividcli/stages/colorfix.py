"""AdaIN colour fix: each output frame takes the per-channel mean and std of its input frame.

Statistics are per frame and per channel (unbiased variance + 1e-5), as in the reference's
`adaptive_instance_normalization`, so the fix can run frame by frame on a stream.
"""

from __future__ import annotations

import torch

EPS = 1e-5


def _mean_std(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = frames.reshape(*frames.shape[:2], -1)
    std = (flat.var(dim=2) + EPS).sqrt()[..., None, None]
    return flat.mean(dim=2)[..., None, None], std


def adain_color_fix(restored: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Restored frames [T, C, H, W] re-coloured to match reference frames [T, C, H, W]; not clipped."""
    ref_mean, ref_std = _mean_std(reference)
    mean, std = _mean_std(restored)
    return (restored - mean.expand(restored.shape)) / std.expand(restored.shape) * ref_std.expand(
        restored.shape
    ) + ref_mean.expand(restored.shape)
