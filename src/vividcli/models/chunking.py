"""Token chunking of the CogVideoX blocks (`--ff-chunks N`): less activation memory, the same numbers.

At the paper's setting one denoising call holds [2, 65,762, 3072] token tensors of 0.75 GiB each, and
its peak is a count of them (docs/planning.md). With `chunks = N > 1` every `CogVideoXBlock` (the 42
DiT blocks and the ControlNet's 6) runs

* its feed-forward on N slices of the token dimension, one after another, into one output: the
  hidden layer, 4x as wide as the tokens, is alive for one slice at a time;
* the rotary position embedding of the attention's queries and keys N slices at a time, in place
  (diffusers' `apply_rotary_emb` makes float32 copies of the whole query and of its rotated half,
  which is where a stock denoising call reaches its peak);
* the stock block and attention-processor steps otherwise, in the same order, but letting go of
  each large intermediate (attention input, query, key, value, attention output, the feed-forward's
  input) as soon as it has been used, instead of when the function returns.

Each token goes through exactly the same operations: the rotary embedding is element-wise and the
rest is unchanged (bit-identical), and the feed-forward's matrix products differ at most by the
summation order a BLAS picks for fewer rows (tests/test_ff_chunks.py). Module and parameter names do
not change: the block's `forward` is replaced on the instance and the attention gets its processor
through diffusers' `set_processor`; the stock `CogVideoXBlock.forward` and `CogVideoXAttnProcessor2_0`
(diffusers 0.42) are repeated below with only these changes.

Hooks that wrap a block's forward (diffusers' group offloading) keep the forward they found, so the
chunking is installed before them (`models.offload.Placement` does); afterwards only the chunk
count can change.

    enable_token_chunking(transformer, 4)     # every CogVideoXBlock in the model
    enable_token_chunking(transformer, 1)     # back to the stock forward and processor
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, CogVideoXAttnProcessor2_0
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.cogvideox_transformer_3d import CogVideoXBlock
from torch import nn


def token_slices(length: int, chunks: int) -> list[slice]:
    """`chunks` contiguous slices covering range(length), as `torch.chunk` splits it (none empty)."""
    size = -(-length // max(chunks, 1))
    return [slice(start, min(start + size, length)) for start in range(0, length, size)] if length else []


def chunked_feed_forward(ff: nn.Module, hidden_states: torch.Tensor, chunks: int) -> torch.Tensor:
    """`ff(hidden_states)` ([B, L, D] -> [B, L, D']) computed on `chunks` slices of L into one output."""
    slices = token_slices(hidden_states.shape[1], chunks)
    if len(slices) <= 1:
        return ff(hidden_states)
    output = None
    for part in slices:
        result = ff(hidden_states[:, part])
        if output is None:
            output = result.new_empty((result.shape[0], hidden_states.shape[1], *result.shape[2:]))
        output[:, part] = result
        del result
    return output


def rotate_in_place(x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor], chunks: int) -> None:
    """`x[...] = apply_rotary_emb(x, rotary)` for x [B, heads, S, D] (a view), `chunks` slices of S at a time."""
    cos, sin = rotary
    for part in token_slices(x.shape[2], chunks):
        piece = x[:, :, part]
        piece.copy_(apply_rotary_emb(piece, (cos[part], sin[part])))


class ChunkedRotaryCogVideoXAttnProcessor(CogVideoXAttnProcessor2_0):
    """diffusers' `CogVideoXAttnProcessor2_0` with the rotary embedding applied `chunks` token slices at a
    time, in place, and every large intermediate let go once used."""

    def __init__(self, chunks: int):
        super().__init__()
        self.chunks = chunks

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        text_seq_length = encoder_hidden_states.size(1)
        hidden_states = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        batch_size, sequence_length, _ = hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])

        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
        del hidden_states
        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        if image_rotary_emb is not None:  # in place, a slice of the video tokens at a time
            rotate_in_place(query[:, :, text_seq_length:], image_rotary_emb, self.chunks)
            if not attn.is_cross_attention:
                rotate_in_place(key[:, :, text_seq_length:], image_rotary_emb, self.chunks)

        hidden_states = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
        )
        del query, key, value
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        encoder_hidden_states, hidden_states = hidden_states.split(
            [text_seq_length, hidden_states.size(1) - text_seq_length], dim=1
        )
        return hidden_states, encoder_hidden_states


def lean_block_forward(
    self: CogVideoXBlock,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    temb: torch.Tensor,
    image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    attention_kwargs: dict[str, Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`CogVideoXBlock.forward` with the feed-forward in token slices and intermediates let go once used."""
    text_seq_length = encoder_hidden_states.size(1)
    attention_kwargs = attention_kwargs or {}

    # norm & modulate
    norm_hidden_states, norm_encoder_hidden_states, gate_msa, enc_gate_msa = self.norm1(
        hidden_states, encoder_hidden_states, temb
    )
    # attention
    attn_hidden_states, attn_encoder_hidden_states = self.attn1(
        hidden_states=norm_hidden_states,
        encoder_hidden_states=norm_encoder_hidden_states,
        image_rotary_emb=image_rotary_emb,
        **attention_kwargs,
    )
    del norm_hidden_states, norm_encoder_hidden_states
    hidden_states = hidden_states + gate_msa * attn_hidden_states
    encoder_hidden_states = encoder_hidden_states + enc_gate_msa * attn_encoder_hidden_states
    del attn_hidden_states, attn_encoder_hidden_states

    # norm & modulate
    norm_hidden_states, norm_encoder_hidden_states, gate_ff, enc_gate_ff = self.norm2(
        hidden_states, encoder_hidden_states, temb
    )
    # feed-forward
    norm_hidden_states = torch.cat([norm_encoder_hidden_states, norm_hidden_states], dim=1)
    del norm_encoder_hidden_states
    ff_output = chunked_feed_forward(self.ff, norm_hidden_states, self.attn1.processor.chunks)
    del norm_hidden_states
    hidden_states = hidden_states + gate_ff * ff_output[:, text_seq_length:]
    encoder_hidden_states = encoder_hidden_states + enc_gate_ff * ff_output[:, :text_seq_length]
    return hidden_states, encoder_hidden_states


def _is_chunked(block: CogVideoXBlock) -> bool:
    return isinstance(block.attn1.processor, ChunkedRotaryCogVideoXAttnProcessor)


def _has_lean_forward(block: CogVideoXBlock) -> bool:
    forward = vars(block).get("forward")
    return isinstance(forward, types.MethodType) and forward.__func__ is lean_block_forward


def chunk_block(block: CogVideoXBlock, chunks: int) -> None:
    """Run `block` in `chunks` token slices; <= 1: the stock forward and processor again (where no hook
    has wrapped the chunked forward since; otherwise it stays, with one slice: the same numbers)."""
    if _is_chunked(block):
        if chunks > 1 or not _has_lean_forward(block):  # a hook holds the lean forward: keep it, 1 slice
            block.attn1.processor.chunks = max(chunks, 1)
            return
        del block.forward  # the class's forward again
        block.attn1.set_processor(CogVideoXAttnProcessor2_0())
        return
    if chunks <= 1:
        return
    if "forward" in vars(block):
        raise ValueError("token chunking must be installed before hooks wrap the blocks' forward "
                         "(models.offload.Placement installs it first)")
    block.forward = types.MethodType(lean_block_forward, block)
    block.attn1.set_processor(ChunkedRotaryCogVideoXAttnProcessor(chunks))


def enable_token_chunking(model: nn.Module, chunks: int) -> int:
    """Chunk every `CogVideoXBlock` of `model` (`chunks` <= 1: stock); returns how many blocks it set."""
    blocks = [m for m in model.modules() if isinstance(m, CogVideoXBlock)]
    for block in blocks:
        chunk_block(block, chunks)
    return len(blocks)


def token_chunks(model: nn.Module) -> int:
    """The chunk count `enable_token_chunking` set on `model` (1: none)."""
    for module in model.modules():
        if isinstance(module, CogVideoXBlock):
            return module.attn1.processor.chunks if _is_chunked(module) else 1
    return 1
