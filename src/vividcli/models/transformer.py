"""The Vivid-VR transformer: the frozen CogVideoX1.5 DiT plus the control modules it was trained with.

The backbone is diffusers' stock `CogVideoXTransformer3DModel` (same config, same weights as the
official CogVideoX1.5-5B `transformer/` folder). Vivid-VR adds three things, loaded from the
official `Vivid-VR/*.pt` files:

* `control_feat_proj`: the control feature projector (paper 3.2) for the control latents;
* `control_patch_embed`: a patch embedding of the projected control latents, added to the DiT input;
* `connectors`: one dual-branch connector after each DiT block, feeding ControlNet state
  `i // ceil(num_layers / num_states)` into the video tokens.

The model input has 2x16 channels: noisy latents, then control latents. Alternatively the noisy
latents come alone and `control_latents=` separately, possibly with batch 1 for a CFG batch of 2
(the control feature projector then runs once instead of on two identical halves).

`conditioning_scale` is γ of `--fidelity`, CreativeVR's precision knob as a residual modulation
h + γ·a of everything Vivid-VR injects into the frozen DiT: the control patch embedding added to the
DiT input and each connector's residual. γ = 1 is the trained model (bit for bit); γ = 0 skips the
control branch and the connectors, which leaves exactly the stock CogVideoX prediction with the
same backbone weights; values in between scale the injected terms linearly.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.transformers.cogvideox_transformer_3d import CogVideoXTransformer3DModel
from torch import nn

from vividcli.models.connector import DualBranchConnector
from vividcli.models.embedding import control_patch_embed, embed_timestep, embed_tokens, unpatchify
from vividcli.models.projector import ControlFeatureProjector


class VividVRTransformer3DModel(CogVideoXTransformer3DModel):
    """CogVideoX1.5 DiT + control feature projector + control patch embed + dual-branch connectors."""

    # fp8 weight storage (`--weights fp8`) leaves these in the compute dtype: diffusers' own choice for
    # CogVideoX (embeddings, norms) plus the control feature projector (GroupNorm-heavy, 0.2% of FLOPs).
    _skip_layerwise_casting_patterns = ["patch_embed", "norm", "control_feat_proj"]

    # Same constructor signature as the stock model, so the official config.json applies unchanged
    # (diffusers reads the accepted config keys from the signature).
    @functools.wraps(CogVideoXTransformer3DModel.__init__)
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        cfg = self.config
        inner_dim = cfg.num_attention_heads * cfg.attention_head_dim
        self.connectors = nn.ModuleList([DualBranchConnector(inner_dim) for _ in range(cfg.num_layers)])
        self.control_feat_proj = ControlFeatureProjector(cfg.in_channels, cfg.time_embed_dim)
        self.control_patch_embed = control_patch_embed(
            patch_size=cfg.patch_size,
            patch_size_t=cfg.patch_size_t,
            in_channels=cfg.in_channels,
            inner_dim=inner_dim,
            text_embed_dim=cfg.text_embed_dim,
            bias=cfg.patch_bias,
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        control_hidden_states: Sequence[torch.Tensor] | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        timestep_cond: torch.Tensor | None = None,
        ofs: torch.Tensor | None = None,
        attention_kwargs: dict[str, Any] | None = None,
        return_dict: bool = True,
        *,
        control_latents: torch.Tensor | None = None,
        conditioning_scale: float = 1.0,
    ) -> tuple[torch.Tensor] | Transformer2DModelOutput:
        """Noise prediction for [noisy | control] latents [B, F, 2C, H, W] -> [B, F, C, H, W].

        `control_latents=` ([B or 1, F, C, H, W]) passes the control latents apart from the noisy ones.
        The control patch embedding and the connectors' residuals (`control_hidden_states`: the
        ControlNet's per-block states; None skips the connectors) are injected times
        `conditioning_scale` (γ, `--fidelity`); at 0 neither is computed.
        """
        latents = hidden_states
        if control_latents is None:
            latents, control_latents = hidden_states.chunk(2, dim=2)
        frames, _, height, width = latents.shape[1:]

        # 1. Time embedding
        emb = embed_timestep(self, timestep, latents.dtype, timestep_cond, ofs)

        # 2. Patch embedding with the control branch added (times γ)
        tokens = [embed_tokens(self, encoder_hidden_states, latents, control_latents, emb, conditioning_scale)]

        # 3. DiT blocks, each followed by its connector (residual times γ)
        video_tokens = self._blocks(tokens, encoder_hidden_states.shape[1], emb, image_rotary_emb, attention_kwargs,
                                    control_hidden_states, conditioning_scale)

        # 4. Output normalisation and projection
        video_tokens = self.norm_final(video_tokens)
        video_tokens = self.proj_out(self.norm_out(video_tokens, temb=emb))

        # 5. Unpatchify
        cfg = self.config
        output = unpatchify(video_tokens, frames, height, width, cfg.patch_size, cfg.patch_size_t)
        return Transformer2DModelOutput(sample=output) if return_dict else (output,)

    def _blocks(
        self,
        tokens: list[torch.Tensor],
        text_length: int,
        emb: torch.Tensor,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None,
        attention_kwargs: dict[str, Any] | None,
        control_hidden_states: Sequence[torch.Tensor] | None,
        scale: float,
    ) -> torch.Tensor:
        """The DiT blocks; after block i, connector i injects ControlNet state i // ceil(blocks / states).

        `tokens` holds the embedded [text | video] tokens and is emptied: with no other reference left they
        are freed once the first block has used them (0.75 GiB per sample at 65k tokens).
        """
        embedded = tokens.pop()
        text_tokens, video_tokens = embedded[:, :text_length], embedded[:, text_length:]
        del embedded
        connect = control_hidden_states is not None and scale != 0
        interval = math.ceil(len(self.transformer_blocks) / len(control_hidden_states)) if connect else 0
        for i, block in enumerate(self.transformer_blocks):
            video_tokens, text_tokens = block(
                hidden_states=video_tokens,
                encoder_hidden_states=text_tokens,
                temb=emb,
                image_rotary_emb=image_rotary_emb,
                attention_kwargs=attention_kwargs,
            )
            if connect:
                video_tokens = self.connectors[i](video_tokens, control_hidden_states[i // interval], scale)
        return video_tokens
