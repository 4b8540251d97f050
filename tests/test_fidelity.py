"""`--fidelity` γ: CreativeVR's precision knob h + γ·a on everything Vivid-VR injects into the frozen DiT.

The injections are the transformer's control patch embedding (added to the DiT input) and each
dual-branch connector's residual. Invariants: γ = 1 is the trained forward bit for bit; γ = 0 is
exactly the stock diffusers `CogVideoXTransformer3DModel` with the same backbone weights, and the
ControlNet and the control branch never run; in between, the injected terms are linear in γ.
Everything here runs on the tiny random checkpoint (`tiny_ckpt_dir`), whose control path is non-zero.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import CogVideoXTransformer3DModel

from vividcli.config import RestoreOptions
from vividcli.media.reader import ArraySource
from vividcli.models.embedding import embed_timestep, embed_tokens, unpatchify
from vividcli.models.loading import load_models
from vividcli.pipeline import restore_frames
from vividcli.sampling.sampler import rotary_embedding


@pytest.fixture(scope="module")
def models(tiny_ckpt_dir):
    return load_models(tiny_ckpt_dir, torch.float32, "cpu")


@pytest.fixture(scope="module")
def stock(tiny_ckpt_dir):
    """The stock diffusers DiT from the same `transformer/` folder (config and base weights)."""
    model = CogVideoXTransformer3DModel.from_pretrained(
        tiny_ckpt_dir / "CogVideoX1.5-5B", subfolder="transformer", torch_dtype=torch.float32
    )
    return model.eval()


@pytest.fixture(scope="module")
def inputs(models):
    """One CFG evaluation as the sampler makes it: latents at batch 2, control latents and timestep at batch 1."""
    cfg = models.transformer.config
    g = torch.Generator().manual_seed(3)
    latents = torch.randn(2, 4, 16, 8, 12, generator=g)
    control = torch.randn(1, 4, 16, 8, 12, generator=g)
    text = torch.randn(2, 24, cfg.text_embed_dim, generator=g)
    t = torch.tensor([799])
    rope = rotary_embedding(4, 8, 12, cfg.patch_size, cfg.patch_size_t, cfg.attention_head_dim)
    with torch.no_grad():
        states = models.controlnet(latents, text, control, t, image_rotary_emb=rope)
    return latents, control, text, t, rope, states


def ours(models, inputs, gamma: float) -> torch.Tensor:
    latents, control, text, t, rope, states = inputs
    with torch.no_grad():
        return models.transformer(
            latents, text, t, control_hidden_states=states, image_rotary_emb=rope, control_latents=control,
            conditioning_scale=gamma,
        ).sample


def trained_forward(model, inputs) -> torch.Tensor:
    """The Vivid-VR forward as trained, written out from the stock parts (the reference's formulas)."""
    latents, control, text, t, rope, states = inputs
    emb = model.time_embedding(model.time_proj(t).to(latents.dtype))
    projected = model.control_feat_proj(control, emb).expand(latents.shape[0], -1, -1, -1, -1)
    tokens = model.patch_embed(text, latents) + model.control_patch_embed(text, projected)
    text_tokens, video = tokens[:, : text.shape[1]], tokens[:, text.shape[1] :]
    interval = math.ceil(len(model.transformer_blocks) / len(states))
    for i, block in enumerate(model.transformer_blocks):
        video, text_tokens = block(video, text_tokens, emb, image_rotary_emb=rope)
        c, state = model.connectors[i], states[i // interval]
        q = c.norm_q(c._heads(c.to_q(video)))
        k = c.norm_k(c._heads(c.to_k(state)))
        attended = F.scaled_dot_product_attention(q, k, c._heads(state)).transpose(1, 2).flatten(2)
        video = video + c.out_layer(attended) + c.c_mlp(state)
    video = model.proj_out(model.norm_out(model.norm_final(video), temb=emb))
    cfg = model.config
    return unpatchify(video, latents.shape[1], latents.shape[3], latents.shape[4], cfg.patch_size, cfg.patch_size_t)


def test_fidelity_one_is_the_trained_forward_bitwise(models, inputs):
    with torch.no_grad():
        expected = trained_forward(models.transformer, inputs)
    assert torch.equal(ours(models, inputs, 1.0), expected)


def test_fidelity_zero_is_the_stock_cogvideox_prediction_bitwise(models, stock, inputs):
    ours_base = {k: v for k, v in models.transformer.state_dict().items() if k in stock.state_dict()}
    assert ours_base.keys() == stock.state_dict().keys()
    assert all(torch.equal(v, stock.state_dict()[k]) for k, v in ours_base.items())
    latents, control, text, t, rope, _ = inputs
    with torch.no_grad():
        expected = stock(latents, text, t, image_rotary_emb=rope).sample
        packed = models.transformer(  # the 2x16-channel input form: the control half is ignored too
            torch.cat([latents, control.expand_as(latents)], dim=2), text, t, image_rotary_emb=rope,
            conditioning_scale=0.0,
        ).sample
    assert torch.equal(ours(models, inputs, 0.0), expected)
    assert torch.equal(packed, expected)


def test_fidelity_scales_each_connector_residual_linearly(models, inputs):
    connector, state = models.transformer.connectors[0], inputs[5][0]
    hidden = torch.randn(2, state.shape[1], state.shape[2], generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        delta = {g: connector(hidden, state, g) - hidden for g in (0.0, 0.5, 1.0, 2.0)}
    assert delta[1.0].abs().max() > 1e-3  # the residual is not negligible here
    assert torch.equal(delta[0.0], torch.zeros_like(hidden))
    torch.testing.assert_close(delta[0.5], 0.5 * delta[1.0], rtol=0, atol=1e-6)
    torch.testing.assert_close(delta[2.0], 2.0 * delta[1.0], rtol=0, atol=1e-6)


def test_fidelity_scales_the_control_patch_embedding_linearly(models, inputs):
    latents, control, text, t, _, _ = inputs
    model = models.transformer
    with torch.no_grad():
        emb = embed_timestep(model, t, latents.dtype)
        tokens = {g: embed_tokens(model, text, latents, control, emb, g) for g in (0.0, 0.5, 1.0)}
        assert torch.equal(tokens[0.0], model.patch_embed(text, latents))  # the stock DiT input
    injected = tokens[1.0] - tokens[0.0]
    assert injected.abs().max() > 1e-2
    torch.testing.assert_close(tokens[0.5] - tokens[0.0], 0.5 * injected, rtol=0, atol=1e-6)


def test_fidelity_mid_values_interpolate_the_prediction(models, inputs):
    """The prediction moves steadily from the stock prior (γ = 0) to the trained model (γ = 1)."""
    gammas = (0.0, 0.25, 0.5, 0.75, 1.0)
    out = {g: ours(models, inputs, g) for g in gammas}
    from_prior = [(out[g] - out[0.0]).norm().item() for g in gammas]
    to_trained = [(out[g] - out[1.0]).norm().item() for g in gammas]
    assert from_prior == sorted(from_prior) and len(set(from_prior)) == len(gammas), from_prior
    assert to_trained == sorted(to_trained, reverse=True) and len(set(to_trained)) == len(gammas), to_trained


class StockAsVivid(torch.nn.Module):
    """The stock DiT behind the sampler's transformer call (which also passes the control inputs)."""

    def __init__(self, stock: CogVideoXTransformer3DModel):
        super().__init__()
        self.stock, self.config = stock, stock.config

    def forward(self, x, text, t, control_hidden_states, image_rotary_emb, control_latents, conditioning_scale):
        assert control_hidden_states is None and conditioning_scale == 0
        return self.stock(x, text, t, image_rotary_emb=image_rotary_emb)


def restore_counting(models, fidelity: float) -> tuple[np.ndarray, dict[str, int]]:
    """A short restoration at `fidelity`; -> (frames, forward calls of the ControlNet and the control modules)."""
    t = models.transformer
    modules = {"controlnet": models.controlnet, "transformer": t, "control_feat_proj": t.control_feat_proj,
               "control_patch_embed": t.control_patch_embed, "connectors": t.connectors[0]} if hasattr(
        t, "connectors") else {"controlnet": models.controlnet}
    calls = dict.fromkeys(modules, 0)

    def counter(name):
        def hook(*_):
            calls[name] += 1
        return hook

    handles = [m.register_forward_hook(counter(n)) for n, m in modules.items()]
    frames = np.random.default_rng(0).random((9, 32, 48, 3), dtype=np.float32)
    options = RestoreOptions(upscale=1.0, tile_size=4, clip_frames=9, steps=2, fidelity=fidelity)
    try:
        out = np.stack(list(restore_frames(models, ArraySource(list(frames)), [[""] * 2], options)))
    finally:
        for h in handles:
            h.remove()
    return out, calls


def test_fidelity_zero_restores_with_the_stock_dit_and_never_runs_the_controlnet(models, stock, monkeypatch):
    frames, calls = restore_counting(models, 0.0)
    assert calls["transformer"] > 0
    assert calls["controlnet"] == calls["control_feat_proj"] == calls["control_patch_embed"] == calls["connectors"] == 0
    # The whole sampling loop then equals sampling with the stock CogVideoX DiT.
    monkeypatch.setattr(models, "transformer", StockAsVivid(stock))
    stock_frames, _ = restore_counting(models, 0.0)
    assert np.array_equal(frames, stock_frames)


def test_fidelity_one_runs_the_controlnet_once_per_evaluation(models):
    frames, calls = restore_counting(models, 1.0)
    assert calls["controlnet"] == calls["transformer"] == calls["control_feat_proj"] > 0
    zero, _ = restore_counting(models, 0.0)
    assert not np.array_equal(frames, zero)
