"""The Vivid-VR ControlNet: six CogVideoX blocks over the noisy latents plus the control branch.

It has its own timestep embedding, patch embedding, control feature projector and control patch
embed (official file `Vivid-VR/controlnet/diffusion_pytorch_model.safetensors`). Its outputs are the
video tokens after each block, multiplied by `conditioning_scale` (diffusers' ControlNet convention;
1.0 = as trained).

`--fidelity` does not use `conditioning_scale`: nothing the ControlNet computes enters the frozen
DiT except through the transformer's connectors, so γ scales those residuals (and the transformer's
control patch embedding) in `VividVRTransformer3DModel`, where the injected term is linear in γ; at
γ = 0 the sampler does not run the ControlNet at all.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import CogVideoXPatchEmbed, TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.transformers.cogvideox_transformer_3d import CogVideoXBlock
from torch import nn

from vividcli.models.embedding import control_patch_embed, embed_timestep, embed_tokens
from vividcli.models.projector import ControlFeatureProjector


class VividVRControlNetModel(ModelMixin, ConfigMixin):
    """Defaults are the CogVideoX1.5-5B values with the official 6 ControlNet blocks."""

    _no_split_modules = ["CogVideoXBlock", "CogVideoXPatchEmbed"]
    _skip_layerwise_casting_patterns = ["patch_embed", "norm", "control_feat_proj"]  # as the transformer's

    @register_to_config
    def __init__(
        self,
        num_attention_heads: int = 48,
        attention_head_dim: int = 64,
        in_channels: int = 16,
        out_channels: int | None = 16,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        time_embed_dim: int = 512,
        ofs_embed_dim: int | None = None,
        text_embed_dim: int = 4096,
        num_layers: int = 6,
        dropout: float = 0.0,
        attention_bias: bool = True,
        sample_width: int = 300,
        sample_height: int = 300,
        sample_frames: int = 81,
        patch_size: int = 2,
        patch_size_t: int | None = 2,
        temporal_compression_ratio: int = 4,
        max_text_seq_length: int = 226,
        activation_fn: str = "gelu-approximate",
        timestep_activation_fn: str = "silu",
        norm_elementwise_affine: bool = True,
        norm_eps: float = 1e-5,
        spatial_interpolation_scale: float = 1.875,
        temporal_interpolation_scale: float = 1.0,
        use_rotary_positional_embeddings: bool = True,
        use_learned_positional_embeddings: bool = False,
        patch_bias: bool = False,
    ):
        super().__init__()
        inner_dim = num_attention_heads * attention_head_dim

        # 1. Time (and, for image-to-video checkpoints, ofs) embeddings
        self.time_proj = Timesteps(inner_dim, flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(inner_dim, time_embed_dim, timestep_activation_fn)
        self.ofs_proj = Timesteps(ofs_embed_dim, flip_sin_to_cos, freq_shift) if ofs_embed_dim else None
        self.ofs_embedding = (
            TimestepEmbedding(ofs_embed_dim, ofs_embed_dim, timestep_activation_fn) if ofs_embed_dim else None
        )

        # 2. Patch embedding of the noisy latents (RoPE is applied inside attention)
        self.patch_embed = CogVideoXPatchEmbed(
            patch_size=patch_size,
            patch_size_t=patch_size_t,
            in_channels=in_channels,
            embed_dim=inner_dim,
            text_embed_dim=text_embed_dim,
            bias=patch_bias,
            sample_width=sample_width,
            sample_height=sample_height,
            sample_frames=sample_frames,
            temporal_compression_ratio=temporal_compression_ratio,
            max_text_seq_length=max_text_seq_length,
            spatial_interpolation_scale=spatial_interpolation_scale,
            temporal_interpolation_scale=temporal_interpolation_scale,
            use_positional_embeddings=not use_rotary_positional_embeddings,
            use_learned_positional_embeddings=use_learned_positional_embeddings,
        )
        self.embedding_dropout = nn.Dropout(dropout)

        # 3. Transformer blocks
        self.transformer_blocks = nn.ModuleList(
            [
                CogVideoXBlock(
                    dim=inner_dim,
                    num_attention_heads=num_attention_heads,
                    attention_head_dim=attention_head_dim,
                    time_embed_dim=time_embed_dim,
                    dropout=dropout,
                    activation_fn=activation_fn,
                    attention_bias=attention_bias,
                    norm_elementwise_affine=norm_elementwise_affine,
                    norm_eps=norm_eps,
                )
                for _ in range(num_layers)
            ]
        )

        # 4. Control branch
        self.control_feat_proj = ControlFeatureProjector(in_channels, time_embed_dim)
        self.control_patch_embed = control_patch_embed(
            patch_size=patch_size,
            patch_size_t=patch_size_t,
            in_channels=in_channels,
            inner_dim=inner_dim,
            text_embed_dim=text_embed_dim,
            bias=patch_bias,
        )

    @classmethod
    def from_transformer_config(cls, transformer_config: dict[str, Any], num_layers: int = 6) -> "VividVRControlNetModel":
        """A ControlNet shaped like a transformer config (how the official one was built)."""
        accepted = cls._get_init_keys(cls) - {"self"}
        kwargs = {k: v for k, v in dict(transformer_config).items() if k in accepted}
        kwargs.update(num_layers=num_layers, use_rotary_positional_embeddings=True, use_learned_positional_embeddings=False)
        return cls(**kwargs)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        control_states: torch.Tensor,
        timestep: torch.Tensor,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        conditioning_scale: float = 1.0,
        timestep_cond: torch.Tensor | None = None,
        ofs: torch.Tensor | None = None,
        attention_kwargs: dict[str, Any] | None = None,
    ) -> list[torch.Tensor]:
        """Noisy latents [B, F, C, H, W] and control latents -> video-token states [B, N, D] per block.

        The control latents have batch B, or batch 1 to be projected once and shared by the batch.
        `conditioning_scale` multiplies the states (the sampler leaves it at 1; see the module docstring).
        """
        # 1. Time embedding
        emb = embed_timestep(self, timestep, hidden_states.dtype, timestep_cond, ofs)

        # 2. Patch embedding with the control branch added
        tokens = embed_tokens(self, encoder_hidden_states, hidden_states, control_states, emb)
        text_length = encoder_hidden_states.shape[1]
        text_tokens, video_tokens = tokens[:, :text_length], tokens[:, text_length:]

        # 3. Transformer blocks, keeping every block's video tokens
        states = []
        for block in self.transformer_blocks:
            video_tokens, text_tokens = block(
                hidden_states=video_tokens,
                encoder_hidden_states=text_tokens,
                temb=emb,
                image_rotary_emb=image_rotary_emb,
                attention_kwargs=attention_kwargs,
            )
            states.append(video_tokens)

        # 4. Conditioning scale
        return [state * conditioning_scale for state in states] if conditioning_scale != 1.0 else states
