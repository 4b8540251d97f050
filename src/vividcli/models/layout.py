"""The official checkpoint layout: the one definition of which files live where.

    <ckpt-dir>/CogVideoX1.5-5B/   model_index.json, {transformer,vae,text_encoder,tokenizer,scheduler}/  (zai-org)
    <ckpt-dir>/Vivid-VR/          controlnet/{config.json,diffusion_pytorch_model.safetensors},
                                  connectors.pt, control_feat_proj.pt, control_patch_embed.pt          (csbhr)
    <ckpt-dir>/Qwen3-VL-4B-Instruct/  config.json, model*.safetensors(.index.json), tokenizer and
                                  processor files                       (default captioner; Qwen)
    <ckpt-dir>/RealESRGAN/RealESRGAN_x2plus.pth                                   (optional: text fix)

Loading (`models/loading.py`), downloading and verifying (`hub/`), the tiny test checkpoints
(`vividcli.testing`) and `doctor` all read it from here. No torch: checking a folder is instant.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vividcli.errors import CheckpointError

COGVIDEOX_REPO = "zai-org/CogVideoX1.5-5B"
VIVIDVR_REPO = "csbhr/Vivid-VR"
COGVIDEOX_FOLDER = "CogVideoX1.5-5B"
VIVIDVR_FOLDER = "Vivid-VR"
REALESRGAN_FOLDER = "RealESRGAN"
CAPTIONER_REPO = "Qwen/Qwen3-VL-4B-Instruct"  # the default captioner (docs/captions.md says why this one)
CAPTIONER_FOLDER = "Qwen3-VL-4B-Instruct"
REALESRGAN_FILE = "RealESRGAN_x2plus.pth"
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model"  # weight file stem of diffusers model folders
HOW_TO_GET = (f"get the official checkpoints with `vividvr models download` or from Hugging Face "
              f"({COGVIDEOX_REPO}, {VIVIDVR_REPO})")

# Vivid-VR additions to the transformer: state-dict prefix -> file under Vivid-VR/.
TRANSFORMER_ADDITIONS = {
    "connectors.": "connectors.pt",
    "control_feat_proj.": "control_feat_proj.pt",
    "control_patch_embed.": "control_patch_embed.pt",
}


def weights_alternatives(subfolder: str, stem: str) -> tuple[str, ...]:
    """A safetensors weight file, or the index of a sharded one (either will do)."""
    prefix = f"{subfolder}/" if subfolder else ""
    return (f"{prefix}{stem}.safetensors", f"{prefix}{stem}.safetensors.index.json")


# What each folder must hold, relative to it; an entry with several paths is satisfied by any of them.
VIVIDVR_FILES: tuple[tuple[str, ...], ...] = (
    ("controlnet/config.json",), weights_alternatives("controlnet", DIFFUSERS_WEIGHTS),
    *((name,) for name in TRANSFORMER_ADDITIONS.values()),
)
COGVIDEOX_FILES: tuple[tuple[str, ...], ...] = (
    ("model_index.json",), ("scheduler/scheduler_config.json",),
    ("transformer/config.json",), weights_alternatives("transformer", DIFFUSERS_WEIGHTS),
    ("vae/config.json",), weights_alternatives("vae", DIFFUSERS_WEIGHTS),
    ("text_encoder/config.json",), weights_alternatives("text_encoder", "model"),
    # Without its sentencepiece model transformers builds a tokenizer of the special tokens only,
    # silently: every prompt would encode to padding.
    ("tokenizer/spiece.model",), ("tokenizer/tokenizer_config.json",),
)
REALESRGAN_FILES: tuple[tuple[str, ...], ...] = ((REALESRGAN_FILE,),)
# The default captioner: a transformers model folder (AutoProcessor + AutoModelForImageTextToText).
CAPTIONER_FILES: tuple[tuple[str, ...], ...] = (
    ("config.json",), weights_alternatives("", "model"), ("tokenizer_config.json",),
)


def _index_shards(index: Path) -> list[str]:
    """Shard file names a safetensors index names ([] when it cannot be read: loading says why)."""
    try:
        return sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []


@dataclass(frozen=True)
class CheckpointLayout:
    """Paths of the official layout under one checkpoint folder."""

    root: Path

    @property
    def cogvideox(self) -> Path:
        return self.root / COGVIDEOX_FOLDER

    @property
    def vividvr(self) -> Path:
        return self.root / VIVIDVR_FOLDER

    @property
    def realesrgan_model(self) -> Path:
        return self.root / REALESRGAN_FOLDER / REALESRGAN_FILE

    @property
    def captioner(self) -> Path:
        """The default captioner's folder (optional: without it captions are empty)."""
        return self.root / CAPTIONER_FOLDER

    def captioner_missing(self) -> Path | None:
        """The first file of the default captioner that is not there (shards named by an index
        included), or None when it is complete."""
        for alternatives in CAPTIONER_FILES:
            present = [self.captioner / rel for rel in alternatives if (self.captioner / rel).is_file()]
            if not present:
                return self.captioner / alternatives[0]
            for found in present:
                if found.name.endswith(".index.json"):
                    for shard in _index_shards(found):
                        if not (found.parent / shard).is_file():
                            return found.parent / shard
        return None

    def required_files(self) -> list[tuple[Path, ...]]:
        """Every file `restore` needs, each as its alternatives (absolute paths)."""
        return [tuple(self.cogvideox / rel for rel in alternatives) for alternatives in COGVIDEOX_FILES] + [
            tuple(self.vividvr / rel for rel in alternatives) for alternatives in VIVIDVR_FILES]

    def check(self) -> None:
        """Raise a one-line CheckpointError for the first missing folder or file."""
        if not self.root.is_dir():
            raise CheckpointError(f"checkpoint folder {self.root} does not exist; {HOW_TO_GET}")
        for alternatives in self.required_files():
            if not any(path.exists() for path in alternatives):
                raise CheckpointError(f"checkpoint incomplete: {alternatives[0]} is missing; {HOW_TO_GET}")
