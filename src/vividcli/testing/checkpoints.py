"""Tiny random checkpoints in the official on-disk layout, for tests and demos.

`write_tiny_checkpoint(root)` writes exactly what `vividcli.models.loading.load_models(root)` reads:

    root/CogVideoX1.5-5B/model_index.json
    root/CogVideoX1.5-5B/transformer/{config.json, diffusion_pytorch_model.safetensors.index.json,
                                      diffusion_pytorch_model-0000{1,2}-of-00002.safetensors}
    root/CogVideoX1.5-5B/vae/{config.json, diffusion_pytorch_model.safetensors}
    root/CogVideoX1.5-5B/text_encoder/{config.json, model.safetensors.index.json, model-0000{1,2}-of-00002.safetensors}
    root/CogVideoX1.5-5B/tokenizer/{spiece.model, tokenizer_config.json, special_tokens_map.json, added_tokens.json}
    root/CogVideoX1.5-5B/scheduler/scheduler_config.json
    root/Vivid-VR/controlnet/{config.json, diffusion_pytorch_model.safetensors}
    root/Vivid-VR/{connectors.pt, control_feat_proj.pt, control_patch_embed.pt}

As in the real downloads, the transformer folder holds only the stock CogVideoX keys; the Vivid-VR
additions (connectors, control feature projector, control patch embed) are `torch.save`d state dicts
relative to those modules. Every tensor is drawn from N(0, 0.02^2) -- including the parts training
zero-initialises, so the control path changes the output -- except normalisation weights
(1 + 0.1 N(0, 1)). Tensors are stored in `spec.dtype` (bfloat16, like the official files).

Sizes are dominated by widths the official code hard-codes (320-channel projector twice, 512-wide
connector MLPs), so even the default spec is ~19 MB. The tokenizer is a small sentencepiece unigram
model trained on the fly on text that covers the Vivid-VR prompts, so those tokenise without `<unk>`.

    python -m vividcli.testing.checkpoints OUT_DIR [--seed N]

The full-size official configs it shrinks live in `vividcli.testing.configs` (shared with benchmarks/).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from vividcli.models.controlnet import VividVRControlNetModel
from vividcli.models.layout import TRANSFORMER_ADDITIONS, CheckpointLayout
from vividcli.models.transformer import VividVRTransformer3DModel
from vividcli.stages.prompts import NEGATIVE_PROMPT, POSITIVE_SUFFIX
from vividcli.testing.configs import DIFFUSERS_VERSION, MODEL_INDEX, SCHEDULER_CONFIG, cogvideox_transformer_config

# The prompts of the official inference script (also in the golden JSONs); the tokenizer must cover them.
POSITIVE_PROMPT, NEGATIVE_PROMPT = POSITIVE_SUFFIX, NEGATIVE_PROMPT
_EXTRA_TEXT = [
    "a tile number 0 1 2 3 4 5 6 7 8 9",
    "clip 0 tile number 1 clip 2 tile number 3",
    "The video shows a person walking along a street at night, with cars and lights in the background.",
    "A close-up of a face, smiling, natural light; the camera moves slowly to the left.",
    "Landscape with mountains, trees, a river and a blue sky; birds fly over the water.",
    "An old film scene: a man and a woman talk in a room (black and white, grainy).",
]

EXTRA_IDS = 100


@dataclass(frozen=True)
class TinySpec:
    """Sizes of a tiny random checkpoint (defaults: ~19 MB, about 2 s on CPU once imports are done)."""

    # DiT (transformer and ControlNet share these)
    # hidden = heads x head_dim must be divisible by the connectors' 48 hard-coded heads; 96 gives the
    # connector LayerNorm 2 channels (48 would give 1: q and k would collapse to their bias). The
    # head dim must split into even 3D-RoPE parts (t = d//4, h = w = d//8*3): 16, 32, 48, 64 work, 24 not.
    num_attention_heads: int = 3
    attention_head_dim: int = 32
    num_layers: int = 2
    controlnet_layers: int = 1
    time_embed_dim: int = 32
    text_embed_dim: int = 32  # = T5 d_model
    patch_size: int = 2
    patch_size_t: int = 2
    # T5 text encoder
    t5_d_kv: int = 8
    t5_num_heads: int = 4
    t5_d_ff: int = 64
    t5_num_layers: int = 2
    tokenizer_vocab_size: int = 160  # upper bound: sentencepiece may keep fewer pieces
    # VAE (latent_channels must stay 16: the projector and the pipeline assume it)
    vae_block_out_channels: tuple[int, ...] = (16, 16, 16, 16)
    vae_layers_per_block: int = 1
    vae_norm_num_groups: int = 8
    vae_sample_height: int = 512  # VAE tiling tiles are derived from these: large = no tiling in small tests
    vae_sample_width: int = 512
    vae_scaling_factor: float = 0.7
    # storage
    dtype: str = "bfloat16"

    @property
    def hidden_size(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def torch_dtype(self) -> torch.dtype:
        dtype = getattr(torch, self.dtype, None)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"TinySpec.dtype {self.dtype!r} is not a torch floating-point dtype")
        return dtype

    def validate(self) -> None:
        if self.hidden_size % 48:
            raise ValueError(f"hidden size {self.hidden_size} must be divisible by the connectors' 48 heads")
        d = self.attention_head_dim
        if (d // 4) % 2 or (d // 8 * 3) % 2 or d < 16:
            raise ValueError(f"attention_head_dim {d} does not split into even 3D-RoPE parts (use 16, 32, 48, 64, ...)")
        if not 1 <= self.controlnet_layers <= self.num_layers:
            raise ValueError("controlnet_layers must be between 1 and num_layers")
        if any(c % self.vae_norm_num_groups for c in self.vae_block_out_channels):
            raise ValueError("every VAE block channel count must be divisible by vae_norm_num_groups")
        self.torch_dtype  # noqa: B018  (validates)


# ----------------------------------------------------------------------------------------- configs


def transformer_config(spec: TinySpec) -> dict:
    """`transformer/config.json`: the official CogVideoX1.5-5B values except the sizes of `spec`."""
    return cogvideox_transformer_config(
        attention_head_dim=spec.attention_head_dim, num_attention_heads=spec.num_attention_heads,
        num_layers=spec.num_layers, patch_size=spec.patch_size, patch_size_t=spec.patch_size_t,
        text_embed_dim=spec.text_embed_dim, time_embed_dim=spec.time_embed_dim)


def controlnet_config(spec: TinySpec) -> dict:
    """`Vivid-VR/controlnet/config.json`: the transformer values with the ControlNet's layer count."""
    config = transformer_config(spec)
    config.update(_class_name="CogVideoXVividVRControlNetModel", num_layers=spec.controlnet_layers)
    return config


def vae_config(spec: TinySpec) -> dict:
    blocks = len(spec.vae_block_out_channels)
    return {
        "_class_name": "AutoencoderKLCogVideoX",
        "_diffusers_version": DIFFUSERS_VERSION,
        "act_fn": "silu",
        "block_out_channels": list(spec.vae_block_out_channels),
        "down_block_types": ["CogVideoXDownBlock3D"] * blocks,
        "force_upcast": True,
        "in_channels": 3,
        "invert_scale_latents": True,
        "latent_channels": 16,
        "latents_mean": None,
        "latents_std": None,
        "layers_per_block": spec.vae_layers_per_block,
        "norm_eps": 1e-06,
        "norm_num_groups": spec.vae_norm_num_groups,
        "out_channels": 3,
        "sample_height": spec.vae_sample_height,
        "sample_width": spec.vae_sample_width,
        "scaling_factor": spec.vae_scaling_factor,
        "shift_factor": None,
        "temporal_compression_ratio": 4,
        "up_block_types": ["CogVideoXUpBlock3D"] * blocks,
        "use_post_quant_conv": False,
        "use_quant_conv": False,
    }


def text_encoder_config(spec: TinySpec, vocab_size: int) -> dict:
    """`text_encoder/config.json` of a `T5EncoderModel` (T5 v1.1: gated-gelu, untied embeddings)."""
    return {
        "architectures": ["T5EncoderModel"],
        "classifier_dropout": 0.0,
        "d_ff": spec.t5_d_ff,
        "d_kv": spec.t5_d_kv,
        "d_model": spec.text_embed_dim,
        "decoder_start_token_id": 0,
        "dense_act_fn": "gelu_new",
        "dropout_rate": 0.0,
        "eos_token_id": 1,
        "feed_forward_proj": "gated-gelu",
        "initializer_factor": 1.0,
        "is_encoder_decoder": True,
        "is_gated_act": True,
        "layer_norm_epsilon": 1e-06,
        "model_type": "t5",
        "num_decoder_layers": spec.t5_num_layers,
        "num_heads": spec.t5_num_heads,
        "num_layers": spec.t5_num_layers,
        "pad_token_id": 0,
        "relative_attention_max_distance": 128,
        "relative_attention_num_buckets": 32,
        "tie_word_embeddings": False,
        "torch_dtype": spec.dtype,
        "use_cache": True,
        "vocab_size": vocab_size,
    }


# ----------------------------------------------------------------------------------------- weights


def _norm_weight_names(module: nn.Module) -> set[str]:
    """State-dict names of normalisation scales (LayerNorm, GroupNorm, T5LayerNorm, ...)."""
    names = set()
    for prefix, sub in module.named_modules():
        if "Norm" in type(sub).__name__ and sub._parameters.get("weight") is not None:
            names.add(f"{prefix}.weight" if prefix else "weight")
    return names


def random_state_dict(module: nn.Module, seed: int, dtype: torch.dtype, std: float = 0.02) -> dict[str, torch.Tensor]:
    """A random state dict with the module's keys and shapes (the module may live on the meta device).

    N(0, std^2) everywhere, 1 + 0.1 N(0, 1) for normalisation scales; one generator per call, keys in
    state-dict order, so the result depends only on (module structure, seed).
    """
    if any(True for _ in module.buffers()):
        names = [n for n, _ in module.named_buffers()]
        raise ValueError(f"{type(module).__name__} has buffers {names[:3]}; random_state_dict only fills parameters")
    generator = torch.Generator().manual_seed(seed)
    norms = _norm_weight_names(module)
    state = {}
    for key, param in module.state_dict().items():
        values = torch.randn(param.shape, generator=generator, dtype=torch.float32)
        values = 1.0 + 0.1 * values if key in norms else std * values
        state[key] = values.to(dtype).contiguous()
    return state


def _size(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def save_sharded(tensors: dict[str, torch.Tensor], folder: Path, weights_name: str, num_shards: int = 2) -> None:
    """`{weights_name}-0000k-of-0000n.safetensors` + `{weights_name}.safetensors.index.json` (HF layout)."""
    keys = list(tensors)
    per_shard = -(-len(keys) // num_shards)
    weight_map = {}
    for index in range(num_shards):
        shard_name = f"{weights_name}-{index + 1:05d}-of-{num_shards:05d}.safetensors"
        shard_keys = keys[index * per_shard : (index + 1) * per_shard]
        save_file({k: tensors[k] for k in shard_keys}, str(folder / shard_name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard_keys, shard_name))
    index_json = {"metadata": {"total_size": _size(tensors)}, "weight_map": dict(sorted(weight_map.items()))}
    _write_json(folder / f"{weights_name}.safetensors.index.json", index_json)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------------------- tokenizer


def tokenizer_training_text() -> list[str]:
    """The sentences the tiny sentencepiece model is trained on (covers every Vivid-VR prompt)."""
    captions = [f"a tile number {k}" for k in range(10)] + [f"clip {c} tile number {k}" for c in range(4) for k in range(4)]
    return [POSITIVE_PROMPT, NEGATIVE_PROMPT, *(f"{c} {POSITIVE_PROMPT}" for c in captions), *_EXTRA_TEXT]


def train_sentencepiece(vocab_size: int) -> bytes:
    """A unigram sentencepiece model (pad=0, eos=1, unk=2, no bos; nmt_nfkc), as T5's spiece.model."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(tokenizer_training_text()),
        model_writer=model,
        model_type="unigram",
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        character_coverage=1.0,
        normalization_rule_name="nmt_nfkc",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def write_tokenizer(folder: Path, vocab_size: int) -> int:
    """spiece.model + the T5Tokenizer json files; returns the full vocabulary size (pieces + extra ids)."""
    import sentencepiece as spm

    proto = train_sentencepiece(vocab_size)
    pieces = spm.SentencePieceProcessor(model_proto=proto).get_piece_size()
    (folder / "spiece.model").write_bytes(proto)
    extra = [f"<extra_id_{i}>" for i in range(EXTRA_IDS)]
    special = {"content": None, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
    decoder = {str(i): {**special, "content": tok, "special": True} for i, tok in enumerate(["<pad>", "</s>", "<unk>"])}
    for i, tok in enumerate(extra):  # T5: <extra_id_0> is the last id
        decoder[str(pieces + EXTRA_IDS - 1 - i)] = {**special, "content": tok, "lstrip": True, "rstrip": True, "special": True}
    _write_json(
        folder / "tokenizer_config.json",
        {
            "add_prefix_space": True,
            "added_tokens_decoder": dict(sorted(decoder.items(), key=lambda kv: int(kv[0]))),
            "additional_special_tokens": extra,
            "clean_up_tokenization_spaces": True,
            "eos_token": "</s>",
            "extra_ids": EXTRA_IDS,
            "legacy": True,
            "model_max_length": 226,
            "pad_token": "<pad>",
            "sp_model_kwargs": {},
            "tokenizer_class": "T5Tokenizer",
            "unk_token": "<unk>",
        },
    )
    _write_json(
        folder / "special_tokens_map.json",
        {
            "additional_special_tokens": extra,
            "eos_token": {**special, "content": "</s>"},
            "pad_token": {**special, "content": "<pad>"},
            "unk_token": {**special, "content": "<unk>"},
        },
    )
    _write_json(folder / "added_tokens.json", {tok: pieces + EXTRA_IDS - 1 - i for i, tok in enumerate(extra)})
    return pieces + EXTRA_IDS


# ------------------------------------------------------------------------------------------ writer


def write_tiny_checkpoint(root: Path | str, spec: TinySpec = TinySpec(), seed: int = 0) -> Path:
    """Write a random Vivid-VR checkpoint in the official layout under `root`; returns `root`.

    Same (spec, seed) -> the same tensors. `root` may exist; the files written are overwritten.
    """
    from diffusers import AutoencoderKLCogVideoX
    from transformers import T5Config, T5EncoderModel

    spec.validate()
    dtype = spec.torch_dtype
    layout = CheckpointLayout(Path(root))
    cog, viv = layout.cogvideox, layout.vividvr
    folders = [cog / sub for sub in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")]
    for folder in (*folders, viv / "controlnet"):
        folder.mkdir(parents=True, exist_ok=True)
    # Independent generator per component: changing one component's spec leaves the others' weights alone.
    seeds = {name: seed * 1000 + i for i, name in enumerate(["transformer", "controlnet", "vae", "text_encoder"])}

    # Transformer: stock keys in two shards, the Vivid-VR additions in the three .pt files.
    t_config = transformer_config(spec)
    with torch.device("meta"):
        transformer = VividVRTransformer3DModel.from_config(t_config)
    state = random_state_dict(transformer, seeds["transformer"], dtype)
    base = {k: v for k, v in state.items() if not k.startswith(tuple(TRANSFORMER_ADDITIONS))}
    save_sharded(base, cog / "transformer", "diffusion_pytorch_model")
    _write_json(cog / "transformer" / "config.json", t_config)
    for prefix, name in TRANSFORMER_ADDITIONS.items():
        torch.save({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}, viv / name)

    # ControlNet: shaped from the transformer config, as the official one; its own weights.
    with torch.device("meta"):
        controlnet = VividVRControlNetModel.from_transformer_config(t_config, num_layers=spec.controlnet_layers)
    state = random_state_dict(controlnet, seeds["controlnet"], dtype)
    save_file(state, str(viv / "controlnet" / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
    _write_json(viv / "controlnet" / "config.json", controlnet_config(spec))

    # VAE: single file.
    v_config = vae_config(spec)
    with torch.device("meta"):
        vae = AutoencoderKLCogVideoX.from_config(v_config)
    state = random_state_dict(vae, seeds["vae"], dtype)
    save_file(state, str(cog / "vae" / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
    _write_json(cog / "vae" / "config.json", v_config)

    # Tokenizer, then the text encoder sized to its vocabulary (sharded, like the real one).
    vocab_size = write_tokenizer(cog / "tokenizer", spec.tokenizer_vocab_size)
    te_config = text_encoder_config(spec, vocab_size)
    with torch.device("meta"):
        text_encoder = T5EncoderModel(T5Config(**{k: v for k, v in te_config.items() if k != "torch_dtype"}))
    state = random_state_dict(text_encoder, seeds["text_encoder"], dtype)
    state.pop("encoder.embed_tokens.weight", None)  # tied to shared.weight; checkpoints store it once
    save_sharded(state, cog / "text_encoder", "model")
    _write_json(cog / "text_encoder" / "config.json", te_config)

    _write_json(cog / "scheduler" / "scheduler_config.json", SCHEDULER_CONFIG)
    _write_json(cog / "model_index.json", MODEL_INDEX)
    return layout.root


def ensure_tiny_checkpoint(cache_dir: Path | str, spec: TinySpec = TinySpec(), seed: int = 0) -> Path:
    """A tiny checkpoint for (spec, seed) under `cache_dir`, written once and then reused.

    For tests: several modules can share one checkpoint per session (e.g. under pytest's base temp).
    The folder is written under a temporary name and renamed when complete, so a folder that exists
    is whole.
    """
    import hashlib
    import shutil
    import tempfile

    key = json.dumps({"spec": asdict(spec), "seed": seed, "format": 1}, sort_keys=True)
    root = Path(cache_dir) / f"tiny-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if root.is_dir():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        write_tiny_checkpoint(staging, spec, seed)
        staging.rename(root)
    except OSError:
        if not root.is_dir():  # not a lost race with a concurrent writer
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def checkpoint_size(root: Path | str) -> int:
    """Bytes on disk of every file under `root`."""
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vividcli.testing.checkpoints",
        description="Write a tiny random Vivid-VR checkpoint in the official layout (for tests and demos).",
    )
    parser.add_argument("out_dir", type=Path, help="folder to write (CogVideoX1.5-5B/ and Vivid-VR/ inside)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-layers", type=int, default=TinySpec.num_layers)
    parser.add_argument("--controlnet-layers", type=int, default=TinySpec.controlnet_layers)
    parser.add_argument("--dtype", default=TinySpec.dtype, choices=["bfloat16", "float16", "float32"])
    args = parser.parse_args(argv)
    spec = TinySpec(num_layers=args.num_layers, controlnet_layers=args.controlnet_layers, dtype=args.dtype)
    start = time.perf_counter()
    try:
        root = write_tiny_checkpoint(args.out_dir, spec, seed=args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    print(
        f"wrote {root} ({checkpoint_size(root) / 1e6:.1f} MB, {time.perf_counter() - start:.1f} s); "
        f"spec {json.dumps(asdict(spec))}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
