"""Dual-branch connector (paper section 3.2): injects one ControlNet state after a DiT block.

Branch 1 is an MLP of the control tokens; branch 2 is a cross-attention whose queries come from the
DiT video tokens, keys from an MLP of the control tokens, and values are the control tokens
themselves. Both are added to the DiT tokens. Parameter names match the official `connectors.pt`.

`scale` is γ of `--fidelity` (CreativeVR's precision knob, h + γ·a): it multiplies the connector's
residual contribution, so the injected term is linear in γ (γ = 1: as trained, bit for bit).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _mlp(dim: int, width: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, width), nn.SiLU(), nn.Linear(width, dim))


class DualBranchConnector(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int = 48, mlp_width: int = 512, norm_eps: float = 1e-6):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden size {hidden_size} is not divisible by {num_heads} connector heads")
        self.num_heads = num_heads
        head_dim = hidden_size // num_heads
        self.to_q = _mlp(hidden_size, mlp_width)
        self.to_k = _mlp(hidden_size, mlp_width)
        self.norm_q = nn.LayerNorm(head_dim, eps=norm_eps)
        self.norm_k = nn.LayerNorm(head_dim, eps=norm_eps)
        self.out_layer = _mlp(hidden_size, mlp_width)
        self.c_mlp = _mlp(hidden_size, mlp_width)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # [B, N, D] -> [B, heads, N, D/heads]

    def forward(self, hidden_states: torch.Tensor, control_states: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """DiT video tokens [B, N, D] and control tokens [B, M, D] -> updated DiT tokens [B, N, D].

        Returns `hidden_states + scale * (attention branch + MLP branch)`.
        """
        # 1. Cross-attention: queries from the DiT tokens, keys from an MLP of the control tokens,
        #    values the control tokens themselves
        #    (each intermediate is let go as soon as it is used: at 65k tokens each is 0.75 GiB)
        q = self.norm_q(self._heads(self.to_q(hidden_states)))
        k = self.norm_k(self._heads(self.to_k(control_states)))
        attended = F.scaled_dot_product_attention(q, k, self._heads(control_states))
        del q, k
        attended = attended.transpose(1, 2).flatten(2)

        # 2. Residual, each branch times γ; at γ = 1 exactly the reference's `h + out_layer(attn) + c_mlp(c)`
        attention_branch = self.out_layer(attended)
        del attended
        mlp_branch = self.c_mlp(control_states)
        if scale != 1.0:
            attention_branch, mlp_branch = scale * attention_branch, scale * mlp_branch
        return hidden_states + attention_branch + mlp_branch
