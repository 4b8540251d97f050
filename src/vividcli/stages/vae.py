"""VAE stages: control-video encoding (with posterior sampling) and latent decoding.

Both call the stock `AutoencoderKLCogVideoX` with slicing and tiling enabled, as the reference does,
so encodes and decodes match it bit for bit. Latents are [B, T, C, h, w] everywhere else in vividvr.
"""

from __future__ import annotations

import torch

from vividcli.planning.clips import latent_frame_count
from vividcli.planning.geometry import latent_padding_frames
from vividcli.stages.resize import resize_decoded


def encode_control_latents(
    vae: torch.nn.Module, video: torch.Tensor, generator: torch.Generator, dtype: torch.dtype, patch_size_t: int | None
) -> torch.Tensor:
    """VAE input [1, C, F, h, w] -> scaled control latents [1, T, C, h/8, w/8], padded for `patch_size_t`.

    Draws the posterior noise from `generator`. With patch_size_t = 2 an odd latent count gets a
    copy of the first latent prepended (the reference's padding; the copy is dropped before decoding).
    """
    with torch.no_grad():
        posterior = vae.encode(video.to(device=vae.device, dtype=vae.dtype)).latent_dist
    latents = posterior.sample(generator=generator).to(dtype).permute(0, 2, 1, 3, 4)
    latents = vae.config.scaling_factor * latents
    padding = latent_padding_frames(latents.shape[1], patch_size_t)
    return torch.cat([latents[:, :padding], latents], dim=1) if padding else latents


def decode_latents(vae: torch.nn.Module, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Latents [1, T, C, h, w] (padding removed) -> frames [F, C, height, width] in [0, 1].

    Decoded at the VAE size, bilinearly resized to (height, width), then mapped to [0, 1] and clamped.
    """
    scaled = (1 / vae.config.scaling_factor) * latents.permute(0, 2, 1, 3, 4)
    with torch.no_grad():
        frames = vae.decode(scaled.to(device=vae.device, dtype=vae.dtype)).sample[0].permute(1, 0, 2, 3)  # [F, C, h, w]
    frames = resize_decoded(frames, (height, width))
    return (frames / 2 + 0.5).clamp(0, 1).float()


def decode_clip_latents(vae: torch.nn.Module, latents: torch.Tensor, padded_frames: int, size: tuple[int, int],
                        patch_size_t: int | None) -> torch.Tensor:
    """A clip's transformer latents, with the padding latents `encode_control_latents` prepended for
    `patch_size_t` -> its `padded_frames` frames [F, C, *size] in [0, 1]."""
    padding = latent_padding_frames(latent_frame_count(padded_frames), patch_size_t)
    return decode_latents(vae, latents[:, padding:], *size)
