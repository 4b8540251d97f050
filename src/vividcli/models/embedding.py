"""Input embedding shared by the Vivid-VR transformer and ControlNet.

Both models embed the timestep like CogVideoX and add a *control branch* to the patch embedding:
the control latents go through the control feature projector, then through a second patch
embedding (`control_patch_embed`), and the result is added to the ordinary patch embedding of the
noisy latents, text tokens included (the control patch embed has its own text projection).
"""

from __future__ import annotations

import torch
from diffusers.models.embeddings import CogVideoXPatchEmbed
from einops import rearrange
from torch import nn


def control_patch_embed(
    *, patch_size: int, patch_size_t: int | None, in_channels: int, inner_dim: int, text_embed_dim: int, bias: bool
) -> CogVideoXPatchEmbed:
    """The control branch's patch embedding: a stock CogVideoX patch embed without positional tables."""
    return CogVideoXPatchEmbed(
        patch_size=patch_size,
        patch_size_t=patch_size_t,
        in_channels=in_channels,
        embed_dim=inner_dim,
        text_embed_dim=text_embed_dim,
        bias=bias,
        use_positional_embeddings=False,
        use_learned_positional_embeddings=False,
    )


def embed_timestep(
    model: nn.Module,
    timestep: torch.Tensor,
    dtype: torch.dtype,
    timestep_cond: torch.Tensor | None = None,
    ofs: torch.Tensor | None = None,
) -> torch.Tensor:
    """CogVideoX timestep (+ optional ofs) embedding; sinusoids are computed in fp32, then cast."""
    emb = model.time_embedding(model.time_proj(timestep).to(dtype), timestep_cond)
    if model.ofs_embedding is not None:
        emb = emb + model.ofs_embedding(model.ofs_proj(ofs).to(dtype))
    return emb


def embed_tokens(
    model: nn.Module,
    text: torch.Tensor,
    latents: torch.Tensor,
    control_latents: torch.Tensor,
    emb: torch.Tensor,
    control_scale: float = 1.0,
) -> torch.Tensor:
    """[text tokens; video tokens] of the noisy latents with the control branch added, times `control_scale`.

    `control_latents` has the batch of `latents` or batch 1. Batch 1 (under CFG both halves share the
    control latents) runs the projector once and broadcasts its output to the batch before the
    control patch embed, whose text part differs per batch entry. `control_scale` is γ of
    `--fidelity` in the transformer: at 0 the control branch is not computed at all (the stock
    CogVideoX input), at 1 it is added as trained.
    """
    batch = latents.shape[0]
    if control_latents.shape[0] not in (1, batch):
        raise ValueError(f"control latents have batch {control_latents.shape[0]}; expected 1 or {batch}")
    tokens = model.embedding_dropout(model.patch_embed(text, latents))
    if control_scale == 0:
        return tokens
    if emb.shape[0] > 1:  # one timestep per batch entry: each entry needs its own projection
        control_latents = control_latents.expand(batch, *control_latents.shape[1:])
    projected = model.control_feat_proj(control_latents, emb)
    control = model.control_patch_embed(text, projected.expand(batch, *projected.shape[1:]))
    return tokens + (control if control_scale == 1.0 else control_scale * control)


def unpatchify(tokens: torch.Tensor, frames: int, height: int, width: int, p: int, p_t: int | None) -> torch.Tensor:
    """Video tokens [B, N, C*p_t*p*p] -> latents [B, F, C, H, W] (inverse of the patch embedding)."""
    p_t = p_t or 1
    return rearrange(
        tokens,
        "b (t h w) (c q y x) -> b (t q) c (h y) (w x)",
        t=(frames + p_t - 1) // p_t,
        h=height // p,
        w=width // p,
        q=p_t,
        y=p,
        x=p,
    )
