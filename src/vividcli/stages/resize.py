"""The resizes between the sizes that planning/geometry.py plans (reference kernels, bit for bit)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vividcli.planning.geometry import VAE_SCALE


def upscale_video(video: torch.Tensor, factor: float) -> torch.Tensor:
    """Bicubic upscale of [F, C, H, W] in [0, 1], exactly as the reference, clipped to [0, 1].

    The scale factor (not the target size) goes to the kernel, so sampling
    positions use `factor` even though the size is floored.
    """
    if factor == 1.0:
        return video
    return F.interpolate(video, scale_factor=factor, mode="bicubic", align_corners=False).clip(0, 1)


def vae_input(video: torch.Tensor, gen_size: tuple[int, int]) -> torch.Tensor:
    """[F, C, H, W] in [0, 1] -> [1, C, F, h, w] in [-1, 1] at the VAE size (stock diffusers)."""
    # Imported here so planning code stays importable without the diffusers stack.
    from diffusers.video_processor import VideoProcessor

    processor = VideoProcessor(vae_scale_factor=VAE_SCALE)
    return processor.preprocess_video(video, height=gen_size[0], width=gen_size[1])


def caption_video(video: torch.Tensor, gen_size: tuple[int, int]) -> torch.Tensor:
    """[F, C, H, W] resized to the gen size for captioning (reference: bicubic, not clipped)."""
    return F.interpolate(video, size=gen_size, mode="bicubic")


def resize_decoded(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Decoded [F, C, h, w] back to the upscaled size (reference: bilinear, align_corners False)."""
    return F.interpolate(frames, size=size, mode="bilinear")
