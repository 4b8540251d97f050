"""The tiny random checkpoint factory: official layout, strict round trip, forward pass, determinism."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vividcli.models.layout import TRANSFORMER_ADDITIONS
from vividcli.models.loading import load_models
from vividcli.testing.checkpoints import (
    NEGATIVE_PROMPT,
    POSITIVE_PROMPT,
    TinySpec,
    checkpoint_size,
    ensure_tiny_checkpoint,
    main,
    random_state_dict,
    write_tiny_checkpoint,
)

COG, VIV = "CogVideoX1.5-5B", "Vivid-VR"
EXPECTED_FILES = {
    f"{COG}/model_index.json",
    f"{COG}/scheduler/scheduler_config.json",
    f"{COG}/transformer/config.json",
    f"{COG}/transformer/diffusion_pytorch_model.safetensors.index.json",
    f"{COG}/transformer/diffusion_pytorch_model-00001-of-00002.safetensors",
    f"{COG}/transformer/diffusion_pytorch_model-00002-of-00002.safetensors",
    f"{COG}/vae/config.json",
    f"{COG}/vae/diffusion_pytorch_model.safetensors",
    f"{COG}/text_encoder/config.json",
    f"{COG}/text_encoder/model.safetensors.index.json",
    f"{COG}/text_encoder/model-00001-of-00002.safetensors",
    f"{COG}/text_encoder/model-00002-of-00002.safetensors",
    f"{COG}/tokenizer/spiece.model",
    f"{COG}/tokenizer/tokenizer_config.json",
    f"{COG}/tokenizer/special_tokens_map.json",
    f"{COG}/tokenizer/added_tokens.json",
    f"{VIV}/controlnet/config.json",
    f"{VIV}/controlnet/diffusion_pytorch_model.safetensors",
    f"{VIV}/connectors.pt",
    f"{VIV}/control_feat_proj.pt",
    f"{VIV}/control_patch_embed.pt",
}
# README 3.6: keys of the official Vivid-VR/controlnet/config.json.
CONTROLNET_CONFIG_KEYS = {
    "_class_name", "_diffusers_version", "activation_fn", "attention_bias", "attention_head_dim", "dropout",
    "flip_sin_to_cos", "freq_shift", "in_channels", "max_text_seq_length", "norm_elementwise_affine", "norm_eps",
    "num_attention_heads", "num_layers", "ofs_embed_dim", "out_channels", "patch_bias", "patch_size", "patch_size_t",
    "sample_frames", "sample_height", "sample_width", "spatial_interpolation_scale", "temporal_compression_ratio",
    "temporal_interpolation_scale", "text_embed_dim", "time_embed_dim", "timestep_activation_fn",
    "use_learned_positional_embeddings", "use_rotary_positional_embeddings",
}


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    # Written once per session (shared with test_loading_errors.py); tests must not modify it.
    return ensure_tiny_checkpoint(tmp_path_factory.getbasetemp() / "tiny-ckpts")


@pytest.fixture(scope="module")
def models(tiny_ckpt):
    return load_models(tiny_ckpt)


def _all_tensors(root: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint, keyed by 'relative/file::key'."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.suffix == ".safetensors":
            items = load_file(path).items()
        elif path.suffix == ".pt":
            items = torch.load(path, weights_only=True).items()
        else:
            continue
        out.update({f"{path.relative_to(root)}::{k}": v for k, v in items})
    return out


def test_layout_and_configs(tiny_ckpt):
    files = {str(p.relative_to(tiny_ckpt)) for p in tiny_ckpt.rglob("*") if p.is_file()}
    assert files == EXPECTED_FILES
    assert 10e6 < checkpoint_size(tiny_ckpt) < 40e6

    transformer = json.loads((tiny_ckpt / COG / "transformer" / "config.json").read_text())
    assert transformer["_class_name"] == "CogVideoXTransformer3DModel"
    controlnet = json.loads((tiny_ckpt / VIV / "controlnet" / "config.json").read_text())
    assert set(controlnet) == CONTROLNET_CONFIG_KEYS
    assert controlnet["_class_name"] == "CogVideoXVividVRControlNetModel"
    assert controlnet["num_layers"] == TinySpec().controlnet_layers
    assert {k: v for k, v in controlnet.items() if k not in ("_class_name", "num_layers")} == {
        k: v for k, v in transformer.items() if k not in ("_class_name", "num_layers")
    }
    scheduler = json.loads((tiny_ckpt / COG / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["prediction_type"] == "v_prediction" and scheduler["rescale_betas_zero_snr"] is True
    assert scheduler["timestep_spacing"] == "trailing" and scheduler["beta_schedule"] == "scaled_linear"

    # Sharded folders: the index maps every key of every shard and totals their bytes.
    for sub, name in (("transformer", "diffusion_pytorch_model"), ("text_encoder", "model")):
        folder = tiny_ckpt / COG / sub
        index = json.loads((folder / f"{name}.safetensors.index.json").read_text())
        shards = {f: load_file(folder / f) for f in sorted(set(index["weight_map"].values()))}
        assert len(shards) == 2
        assert index["weight_map"] == {k: f for f, sd in shards.items() for k in sd}
        assert index["metadata"]["total_size"] == sum(
            t.numel() * t.element_size() for sd in shards.values() for t in sd.values()
        )
        if sub == "transformer":  # only stock CogVideoX keys: the Vivid-VR additions live in the .pt files
            assert not any(k.startswith(tuple(TRANSFORMER_ADDITIONS)) for k in index["weight_map"])

    tensors = _all_tensors(tiny_ckpt)
    assert {t.dtype for t in tensors.values()} == {torch.bfloat16}
    # Everything is random, including the parts training zero-initialises (the control path matters).
    assert all(t.float().abs().max() > 0 for t in tensors.values())


def test_round_trip_strict_load(tiny_ckpt, models):
    # load_models is strict (raises on any missing/unexpected key or shape); check the values too.
    root = tiny_ckpt / VIV
    for prefix, name in TRANSFORMER_ADDITIONS.items():
        saved = torch.load(root / name, weights_only=True)
        module = getattr(models.transformer, prefix.rstrip("."))
        loaded = module.state_dict()
        assert set(saved) == set(loaded)
        assert all(torch.equal(saved[k].float(), loaded[k]) for k in saved)
    saved = load_file(root / "controlnet" / "diffusion_pytorch_model.safetensors")
    assert set(saved) == set(models.controlnet.state_dict())
    assert len(models.controlnet.transformer_blocks) == TinySpec().controlnet_layers
    assert models.transformer.dtype == torch.float32
    # Stock components: every saved key is a model key (T5's embed_tokens is tied to shared).
    vae_saved = load_file(tiny_ckpt / COG / "vae" / "diffusion_pytorch_model.safetensors")
    assert set(vae_saved) == set(models.vae.state_dict())
    te_keys = set(models.text_encoder.state_dict()) - {"encoder.embed_tokens.weight"}
    te_index = json.loads((tiny_ckpt / COG / "text_encoder" / "model.safetensors.index.json").read_text())
    assert set(te_index["weight_map"]) == te_keys
    assert models.text_encoder.encoder.embed_tokens.weight.data_ptr() == models.text_encoder.shared.weight.data_ptr()
    assert type(models.scheduler).__name__ == "CogVideoXDPMScheduler"


def test_forward_controlnet_and_transformer(models):
    from diffusers.models.embeddings import get_3d_rotary_pos_embed

    spec = TinySpec()
    gen = torch.Generator().manual_seed(3)
    batch, frames, height, width, text_len = 2, 2, 4, 6, 7
    latents = torch.randn(batch, frames, 16, height, width, generator=gen)
    control = torch.randn(batch, frames, 16, height, width, generator=gen)
    text = torch.randn(batch, text_len, spec.text_embed_dim, generator=gen)
    timestep = torch.tensor([500])
    rope = get_3d_rotary_pos_embed(
        embed_dim=spec.attention_head_dim, crops_coords=None, grid_size=(height // 2, width // 2),
        temporal_size=math.ceil(frames / 2), grid_type="slice", max_size=(150, 150),
    )
    with torch.no_grad():
        states = models.controlnet(latents, text, control, timestep, image_rotary_emb=rope)
        tokens = frames // 2 * (height // 2) * (width // 2)
        assert [s.shape for s in states] == [torch.Size([batch, tokens, spec.hidden_size])] * spec.controlnet_layers
        x = torch.cat([latents, control], dim=2)
        out = models.transformer(x, text, timestep, control_hidden_states=states, image_rotary_emb=rope).sample
        without = models.transformer(x, text, timestep, control_hidden_states=None, image_rotary_emb=rope).sample
    assert out.shape == latents.shape
    assert torch.isfinite(out).all() and torch.isfinite(torch.stack(states)).all()
    # The connectors are non-zero, so the ControlNet states change the prediction.
    assert (out - without).norm() > 1e-3 * out.norm()


def test_vae_tokenizer_and_text_encoder(tiny_ckpt, models):
    import sentencepiece as spm

    video = torch.rand(1, 3, 9, 32, 48) * 2 - 1
    with torch.no_grad():
        latent = models.vae.encode(video).latent_dist.mode()
        assert latent.shape == (1, 16, 3, 4, 6)
        decoded = models.vae.decode(latent).sample
    assert decoded.shape == video.shape and torch.isfinite(decoded).all()

    sp = spm.SentencePieceProcessor(model_file=str(tiny_ckpt / COG / "tokenizer" / "spiece.model"))
    tok = models.tokenizer
    for prompt in (f"a tile number 3 {POSITIVE_PROMPT}", f"clip 1 tile number 0 {POSITIVE_PROMPT}", NEGATIVE_PROMPT):
        ids = tok(prompt, padding="max_length", max_length=226, truncation=True).input_ids
        pieces = sp.encode(prompt)
        assert ids == pieces + [1] + [0] * (225 - len(pieces))  # eos, then right padding
        assert tok.unk_token_id not in ids
    assert len(tok) == sp.get_piece_size() + 100 == models.text_encoder.config.vocab_size
    with torch.no_grad():
        embeds = models.text_encoder(torch.tensor([ids])).last_hidden_state
    assert embeds.shape == (1, 226, TinySpec().text_embed_dim) and torch.isfinite(embeds).all()


def test_same_seed_same_tensors_via_cli(tiny_ckpt, tmp_path, capsys):
    assert main([str(tmp_path / "again"), "--seed", "0"]) == 0
    assert "MB" in capsys.readouterr().out
    first, second = _all_tensors(tiny_ckpt), _all_tensors(tmp_path / "again")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    for sub in ("tokenizer/spiece.model", "text_encoder/config.json", "transformer/config.json"):
        assert (tiny_ckpt / COG / sub).read_bytes() == (tmp_path / "again" / COG / sub).read_bytes()


def test_seed_changes_weights():
    from vividcli.models.connector import DualBranchConnector

    with torch.device("meta"):
        module = DualBranchConnector(96)
    a, b, c = (random_state_dict(module, s, torch.bfloat16) for s in (0, 0, 1))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not any(torch.equal(a[k], c[k]) for k in a)
    norm = a["norm_q.weight"].float()
    assert (norm - 1).abs().max() < 0.5  # norm scales stay near 1
    assert 0.01 < a["to_q.0.weight"].float().std() < 0.03


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attention_head_dim": 24, "num_attention_heads": 2},  # hidden 48 but RoPE parts 6/9/9 are odd
        {"attention_head_dim": 32, "num_attention_heads": 1},  # hidden 32: not divisible by 48 connector heads
        {"controlnet_layers": 3},  # more ControlNet blocks than DiT blocks
        {"vae_norm_num_groups": 7},
        {"dtype": "int8"},
    ],
)
def test_invalid_spec_rejected(kwargs, tmp_path):
    with pytest.raises(ValueError):
        write_tiny_checkpoint(tmp_path, TinySpec(**kwargs))
    assert not any(tmp_path.iterdir())


def test_ensure_reuses_a_complete_checkpoint(tiny_ckpt):
    assert ensure_tiny_checkpoint(tiny_ckpt.parent) == tiny_ckpt  # same spec and seed: no rewrite
    assert not [p for p in tiny_ckpt.parent.iterdir() if p.name.startswith(".")]  # no staging left over
