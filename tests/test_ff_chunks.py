"""Token chunking (`--ff-chunks N`, models/chunking.py): the ControlNet + transformer of the tiny checkpoint,
called once on random inputs, give the same prediction with the blocks' feed-forward and rotary embedding
run in N token slices as with the stock forward, up to float summation order (float32 and bfloat16; with
fp8 weights and group offloading too), and turning it off restores the stock modules."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import CogVideoXAttnProcessor2_0

from vividcli.models.chunking import (
    ChunkedRotaryCogVideoXAttnProcessor,
    enable_token_chunking,
    token_chunks,
    token_slices,
)
from vividcli.models.layout import CheckpointLayout
from vividcli.models.loading import load_controlnet, load_transformer
from vividcli.models.offload import Placement
from vividcli.sampling.sampler import rotary_embedding


@pytest.fixture(scope="module")
def layout(tiny_ckpt_dir) -> CheckpointLayout:
    return CheckpointLayout(tiny_ckpt_dir)


def denoisers(layout: CheckpointLayout, dtype: torch.dtype):
    return load_transformer(layout, dtype, "cpu"), load_controlnet(layout, dtype, "cpu")


def tile_inputs(transformer, dtype: torch.dtype, batch: int = 2, frames: int = 4, height: int = 8, width: int = 12):
    """A CFG batch of one tile as the sampler passes it: noisy latents [B, T, C, h, w], control latents at
    batch 1, prompt embeddings, timesteps and the tile's RoPE tables."""
    cfg = transformer.config
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(batch, frames, cfg.in_channels, height, width, generator=generator).to(dtype)
    control = torch.randn(1, frames, cfg.in_channels, height, width, generator=generator).to(dtype)
    text = torch.randn(batch, cfg.max_text_seq_length, cfg.text_embed_dim, generator=generator).to(dtype)
    timestep = torch.full((batch,), 500)
    rope = rotary_embedding(frames, height, width, cfg.patch_size, cfg.patch_size_t, cfg.attention_head_dim)
    return latents, control, text, timestep, rope


def predict(transformer, controlnet, inputs) -> torch.Tensor:
    latents, control, text, timestep, rope = inputs
    with torch.no_grad():
        states = controlnet(latents, text, control, timestep, image_rotary_emb=rope)
        return transformer(latents, text, timestep, control_hidden_states=states, image_rotary_emb=rope,
                           control_latents=control).sample.float()


def test_token_slices_cover_the_sequence_like_torch_chunk() -> None:
    for length in (1, 5, 274, 1000):
        for chunks in (1, 2, 3, 7, 2000):
            slices = token_slices(length, chunks)
            sizes = [len(t) for t in torch.arange(length).chunk(chunks)]
            assert [s.stop - s.start for s in slices] == sizes
            assert slices[0].start == 0 and slices[-1].stop == length


# Measured on this CPU: float32 bit-identical for 2-7 slices and 2.1e-7 apart for 64 (row counts that small
# take another matrix-product kernel); bfloat16 one bf16 step (0.0039 at outputs up to 0.83) apart, as the
# CPU's bf16 products round differently for other row counts. The rotary embedding alone is bit-identical.
TOLERANCE = {torch.float32: 1e-6, torch.bfloat16: 2**-8}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_prediction_equals_the_stock_one_up_to_summation_order(layout, dtype) -> None:
    transformer, controlnet = denoisers(layout, dtype)
    inputs = tile_inputs(transformer, dtype)
    stock = predict(transformer, controlnet, inputs)
    for chunks in (2, 7, 64):  # 64: more slices than the 48 video tokens have rows of 2 (text + video: 274)
        assert enable_token_chunking(transformer, chunks) == transformer.config.num_layers
        assert enable_token_chunking(controlnet, chunks) == controlnet.config.num_layers
        chunked = predict(transformer, controlnet, inputs)
        assert torch.isfinite(chunked).all()
        assert (chunked - stock).abs().max().item() <= TOLERANCE[dtype], chunks


def test_chunked_rotary_embedding_is_bit_identical(layout) -> None:
    transformer, controlnet = denoisers(layout, torch.bfloat16)
    inputs = tile_inputs(transformer, torch.bfloat16)
    stock = predict(transformer, controlnet, inputs)
    for model in (transformer, controlnet):
        for block in model.transformer_blocks:
            block.attn1.set_processor(ChunkedRotaryCogVideoXAttnProcessor(5))
    assert torch.equal(predict(transformer, controlnet, inputs), stock)


def test_turning_chunking_off_restores_the_stock_modules(layout) -> None:
    transformer, _ = denoisers(layout, torch.float32)
    names = list(transformer.state_dict())
    enable_token_chunking(transformer, 4)
    assert token_chunks(transformer) == 4
    block = transformer.transformer_blocks[0]
    assert isinstance(block.attn1.processor, ChunkedRotaryCogVideoXAttnProcessor)
    assert "forward" in vars(block)  # the instance's forward is replaced, nothing renamed
    assert list(transformer.state_dict()) == names
    enable_token_chunking(transformer, 3)  # re-chunking changes the count only
    assert token_chunks(transformer) == 3 and block.attn1.processor.chunks == 3
    enable_token_chunking(transformer, 0)
    assert token_chunks(transformer) == 1
    assert type(block.attn1.processor) is CogVideoXAttnProcessor2_0
    assert "forward" not in vars(block)


def test_chunking_after_hooks_is_refused_and_a_hooked_block_keeps_its_forward(layout) -> None:
    transformer, controlnet = denoisers(layout, torch.float32)
    Placement((transformer, controlnet), "cpu", "group")  # block-level hooks wrap every block's forward
    with pytest.raises(ValueError, match="before hooks"):
        enable_token_chunking(transformer, 4)
    transformer, controlnet = denoisers(layout, torch.float32)
    placement = Placement((transformer, controlnet), "cpu", "group", ff_chunks=4)
    hooked = vars(transformer.transformer_blocks[0])["forward"]
    placement.set_ff_chunks(1)  # the hook holds the chunked forward: one slice, the hook stays
    assert vars(transformer.transformer_blocks[0])["forward"] is hooked and token_chunks(transformer) == 1


def test_chunking_composes_with_fp8_weights_and_group_offloading(layout) -> None:
    """Placement applies it with the other memory options (hooks on the blocks and layers, fp8 casting per layer)."""
    outputs = {}
    for chunks in (1, 4):
        transformer, controlnet = denoisers(layout, torch.float32)
        placement = Placement((transformer, controlnet), "cpu", "group", "fp8", ff_chunks=chunks)
        assert placement.ff_chunks == chunks and token_chunks(controlnet) == chunks
        outputs[chunks] = predict(transformer, controlnet, tile_inputs(transformer, torch.float32))
    assert torch.equal(outputs[4], outputs[1])


def test_placement_refuses_a_negative_chunk_count(layout) -> None:
    transformer, controlnet = denoisers(layout, torch.float32)
    with pytest.raises(ValueError, match="ff_chunks"):
        Placement((transformer, controlnet), "cpu", ff_chunks=-1)
