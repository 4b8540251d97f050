"""The official CogVideoX1.5-5B configuration values (its `config.json` files), in one place.

The tiny test checkpoints (`vividcli.testing.checkpoints`) shrink them; the full-size benchmarks
build the real-size models from them (random weights, nothing downloaded).
"""

from __future__ import annotations

DIFFUSERS_VERSION = "0.31.0"  # what the official config files carry

# zai-org/CogVideoX1.5-5B transformer/config.json.
COGVIDEOX_TRANSFORMER = {
    "_class_name": "CogVideoXTransformer3DModel",
    "_diffusers_version": DIFFUSERS_VERSION,
    "activation_fn": "gelu-approximate",
    "attention_bias": True,
    "attention_head_dim": 64,
    "dropout": 0.0,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 16,
    "max_text_seq_length": 226,
    "norm_elementwise_affine": True,
    "norm_eps": 1e-05,
    "num_attention_heads": 48,
    "num_layers": 42,
    "ofs_embed_dim": None,
    "out_channels": 16,
    "patch_bias": False,
    "patch_size": 2,
    "patch_size_t": 2,
    "sample_frames": 81,
    "sample_height": 300,
    "sample_width": 300,
    "spatial_interpolation_scale": 1.875,
    "temporal_compression_ratio": 4,
    "temporal_interpolation_scale": 1.0,
    "text_embed_dim": 4096,
    "time_embed_dim": 512,
    "timestep_activation_fn": "silu",
    "use_learned_positional_embeddings": False,
    "use_rotary_positional_embeddings": True,
}
VIVIDVR_CONTROLNET_LAYERS = 6  # Vivid-VR/controlnet/config.json: the transformer's values, 6 blocks


def cogvideox_transformer_config(**overrides) -> dict:
    """The official transformer config with `overrides` (e.g. smaller sizes); KeyError on unknown keys."""
    unknown = set(overrides) - set(COGVIDEOX_TRANSFORMER)
    if unknown:
        raise KeyError(f"not CogVideoX transformer config keys: {sorted(unknown)}")
    return {**COGVIDEOX_TRANSFORMER, **overrides}


def model_kwargs(config: dict) -> dict:
    """A config.json dict as constructor arguments (without the `_class_name`-style entries)."""
    return {k: v for k, v in config.items() if not k.startswith("_")}


# zai-org/CogVideoX1.5-5B scheduler/scheduler_config.json (README 3.10).
SCHEDULER_CONFIG = {
    "_class_name": "CogVideoXDDIMScheduler",
    "_diffusers_version": DIFFUSERS_VERSION,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "clip_sample_range": 1.0,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "sample_max_value": 1.0,
    "set_alpha_to_one": True,
    "snr_shift_scale": 1.0,
    "steps_offset": 0,
    "timestep_spacing": "trailing",
    "trained_betas": None,
}

MODEL_INDEX = {
    "_class_name": "CogVideoXPipeline",
    "_diffusers_version": DIFFUSERS_VERSION,
    "scheduler": ["diffusers", "CogVideoXDDIMScheduler"],
    "text_encoder": ["transformers", "T5EncoderModel"],
    "tokenizer": ["transformers", "T5Tokenizer"],
    "transformer": ["diffusers", "CogVideoXTransformer3DModel"],
    "vae": ["diffusers", "AutoencoderKLCogVideoX"],
}

# zai-org/CogVideoX1.5-5B vae/config.json: diffusers' AutoencoderKLCogVideoX defaults (block_out_channels
# 128/256/256/512, 3 layers per block, 32 norm groups, sample 480x720) with the 1.5 scaling values.
COGVIDEOX_VAE = {"scaling_factor": 0.7, "invert_scale_latents": True}

# zai-org/CogVideoX1.5-5B text_encoder/config.json: the T5-v1.1-XXL encoder (4.76e9 parameters).
T5_XXL_ENCODER = {
    "d_model": 4096,
    "d_kv": 64,
    "num_heads": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "vocab_size": 32128,
    "feed_forward_proj": "gated-gelu",
    "dense_act_fn": "gelu_new",
    "is_gated_act": True,
    "layer_norm_epsilon": 1e-06,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "tie_word_embeddings": False,
}
