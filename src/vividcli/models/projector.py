"""Control feature projector (paper section 3.2): cleans the VAE latent of the low-quality video.

Three spatio-temporal residual blocks 16 -> 320 -> 320 -> 16, conditioned on the timestep embedding.
Diffusers' `SpatioTemporalResBlock`/`TemporalResnetBlock` hard-code 32 GroupNorm groups, which cannot
normalise the 16-channel ends, so the blocks here are assembled from the same parts with a `groups`
argument. Their `forward` methods are the stock ones: only the construction differs, and the
parameter names match the official `control_feat_proj.pt`.
"""

from __future__ import annotations

import torch
from diffusers.models.activations import get_activation
from diffusers.models.resnet import AlphaBlender, ResnetBlock2D, SpatioTemporalResBlock, TemporalResnetBlock
from torch import nn

PROJECTOR_WIDTH = 320


class GroupedTemporalResnetBlock(nn.Module):
    """`TemporalResnetBlock` (kernel 3x1x1 along time) with a configurable GroupNorm group count."""

    forward = TemporalResnetBlock.forward

    def __init__(self, channels: int, temb_channels: int, groups: int, eps: float = 1e-6):
        super().__init__()
        kernel, padding = (3, 1, 1), (1, 0, 0)
        self.norm1 = nn.GroupNorm(groups, channels, eps=eps, affine=True)
        self.conv1 = nn.Conv3d(channels, channels, kernel_size=kernel, padding=padding)
        self.time_emb_proj = nn.Linear(temb_channels, channels)
        self.norm2 = nn.GroupNorm(groups, channels, eps=eps, affine=True)
        self.dropout = nn.Dropout(0.0)
        self.conv2 = nn.Conv3d(channels, channels, kernel_size=kernel, padding=padding)
        self.nonlinearity = get_activation("silu")
        self.conv_shortcut = None  # in == out channels, as in every projector block


class GroupedSpatioTemporalResBlock(nn.Module):
    """`SpatioTemporalResBlock` with merge strategy "learned" and a configurable GroupNorm group count."""

    forward = SpatioTemporalResBlock.forward

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, groups: int, eps: float = 1e-6):
        super().__init__()
        self.spatial_res_block = ResnetBlock2D(
            in_channels=in_channels, out_channels=out_channels, temb_channels=temb_channels, groups=groups, eps=eps
        )
        self.temporal_res_block = GroupedTemporalResnetBlock(out_channels, temb_channels, groups, eps)
        self.time_mixer = AlphaBlender(alpha=0.5, merge_strategy="learned")


class ControlFeatureProjector(nn.ModuleList):
    """The three projector blocks; a ModuleList so that keys read `control_feat_proj.{0,1,2}.*`."""

    def __init__(self, latent_channels: int = 16, time_embed_dim: int = 512, width: int = PROJECTOR_WIDTH):
        super().__init__(
            [
                GroupedSpatioTemporalResBlock(latent_channels, width, time_embed_dim, groups=16),
                GroupedSpatioTemporalResBlock(width, width, time_embed_dim, groups=32),
                GroupedSpatioTemporalResBlock(width, latent_channels, time_embed_dim, groups=16),
            ]
        )

    def __getitem__(self, index):
        # ModuleList builds a slice with `type(self)(modules)`, which our constructor's arguments do not
        # allow (diffusers' group offloading slices the blocks): a slice is a plain ModuleList.
        if isinstance(index, slice):
            return nn.ModuleList(list(self._modules.values())[index])
        return super().__getitem__(index)

    def forward(self, control_latents: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """[B, F, C, H, W] latents and a [B, D] timestep embedding -> projected latents, same shape."""
        batch, frames = control_latents.shape[:2]
        x = control_latents.flatten(0, 1)
        # One embedding row per (batch, frame). A batch-1 embedding (the pipeline's timestep batch)
        # serves every batch entry; the "learned" merge ignores the indicator's values.
        frame_emb = emb.expand(batch, -1).repeat_interleave(frames, dim=0)
        indicator = torch.ones(frames, device=x.device)
        for block in self:
            x = block(x, frame_emb, indicator)
        return x.unflatten(0, (batch, frames))
