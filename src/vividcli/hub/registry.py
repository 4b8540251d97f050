"""What can be downloaded, where it goes, and the helpers that read the checkpoint folder's layout.

Everything lives in one checkpoint folder in the official Vivid-VR layout (`models/layout.py` says
which file lives where; `COMPONENTS` adds where each part comes from):

    <ckpt-dir>/Vivid-VR/                 csbhr/Vivid-VR                 (required)
    <ckpt-dir>/CogVideoX1.5-5B/          zai-org/CogVideoX1.5-5B        (required)
    <ckpt-dir>/Qwen3-VL-4B-Instruct/     Qwen/Qwen3-VL-4B-Instruct      (default: automatic captions)
    <ckpt-dir>/RealESRGAN/RealESRGAN_x2plus.pth  Real-ESRGAN v0.2.1     (optional: text fix)

`vividvr models download` fetches the `default` group (what `restore` uses when given no caption
option: the restoration models and the captioner); `required` is the restoration models alone.

The folder is found by `resolve_ckpt_dir` (one rule for every command): `--ckpt-dir`, else
`$VIVIDVR_CKPT_DIR`, else `vividvr` under the Hugging Face home (`$HF_HOME`, by default
`~/.cache/huggingface/vividvr`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from vividcli.models.layout import (
    CAPTIONER_FILES,
    CAPTIONER_FOLDER,
    CAPTIONER_REPO,
    COGVIDEOX_FILES,
    COGVIDEOX_FOLDER,
    COGVIDEOX_REPO,
    DIFFUSERS_WEIGHTS,
    REALESRGAN_FILE,
    REALESRGAN_FILES,
    REALESRGAN_FOLDER,
    TRANSFORMER_ADDITIONS,
    VIVIDVR_FILES,
    VIVIDVR_FOLDER,
    VIVIDVR_REPO,
)

CKPT_ENV = "VIVIDVR_CKPT_DIR"
DOCS_HINT = "docs/models.md"

# ---------------------------------------------------------------------------------------------------------
# Revision pins. A pin is a commit of the Hugging Face repository: the download is reproducible and
# `vividvr models list` shows which commit is on disk. "main" is a moving branch, not a pin.
#
# TODO(pin): csbhr/Vivid-VR -- no commit hash of the model repository could be found while offline;
# replace "main" with `HfApi().model_info("csbhr/Vivid-VR").sha` after checking the files against the
# reference outputs.
VIVIDVR_REVISION = "main"
# TODO(pin): zai-org/CogVideoX1.5-5B -- the latest commit seen (short hash fdc5267, "Update README.md",
# after the transformer config commit "use original sample_height and sample_width") has no known full
# hash; older full hashes (e.g. 5cb8a989..., 9ace5f55...) predate that config change, which alters the
# RoPE grid, so they must not be used. Replace "main" with the full hash of fdc5267 (or later).
COGVIDEOX_REVISION = "main"
# Qwen/Qwen3-VL-4B-Instruct, the default captioner (docs/captions.md). This full hash could not be
# checked against the hub from the offline machine it was written on; it is the commit that
# independent public projects pin for this repository and that appears as its Hugging Face cache
# snapshot (`models--Qwen--Qwen3-VL-4B-Instruct/snapshots/ebb281ec...`), with the two weight shards
# of 4,967,229,296 and 3,908,490,048 bytes. If the hub ever rejects it, the download fails with one
# line naming the revision.
CAPTIONER_REVISION = "ebb281ec70b05090aa6165b016eac8ec08e71b17"

# Real-ESRGAN x2plus, GitHub release v0.2.1. The release page publishes no checksum; this sha256 and size
# are the ones independent packagers pin (e.g. the AUR python-realesrgan PKGBUILD and several model
# registries agree), not an upstream statement.
REALESRGAN_URL = "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.1/RealESRGAN_x2plus.pth"
REALESRGAN_SHA256 = "49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb"
REALESRGAN_SIZE = 67_061_725



@dataclass(frozen=True)
class Component:
    """One downloadable part of the checkpoint folder.

    `requires` lists what must exist, relative to the component folder; an entry with several paths is
    satisfied by any of them (a single safetensors file or a sharded one with its index). Shards named
    by an index are required too. `weights` are the safetensors folders (subfolder, weights name) that
    `verify` checks; `tensor_files` the torch.save'd state dicts.
    """

    name: str
    title: str
    folder: str
    required: bool  # `restore` refuses to run without it
    requires: tuple[tuple[str, ...], ...]
    hand_copy: str  # what to copy where, for one-line messages
    repo_id: str | None = None
    revision: str | None = None
    allow_patterns: tuple[str, ...] | None = None
    ignore_patterns: tuple[str, ...] | None = None
    url: str | None = None
    sha256: str | None = None
    size: int | None = None
    weights: tuple[tuple[str, str], ...] = ()
    tensor_files: tuple[str, ...] = ()
    default: bool = False  # in `vividvr models download`'s default set (required components always are)

    @property
    def source(self) -> str:
        if self.repo_id:
            return f"huggingface.co/{self.repo_id} at revision {self.revision}"
        return str(self.url)

    def path(self, root: Path) -> Path:
        return Path(root) / self.folder


VIVIDVR = Component(
    name="vividvr",
    title="Vivid-VR ControlNet and control modules",
    folder=VIVIDVR_FOLDER,
    required=True,
    requires=VIVIDVR_FILES,
    hand_copy="controlnet/config.json, controlnet/diffusion_pytorch_model.safetensors, connectors.pt, "
              "control_feat_proj.pt and control_patch_embed.pt",
    repo_id=VIVIDVR_REPO,
    revision=VIVIDVR_REVISION,
    # The files sit at the top of the model repository (the official README's `ckpts/Vivid-VR` tree, and
    # `hf download csbhr/Vivid-VR --local-dir ckpts/Vivid-VR` in third-party guides). The repository also
    # holds the test sets (testset.zip), which these patterns leave out. `download` checks the result
    # and says so if the layout ever differs.
    allow_patterns=("controlnet/config.json", f"controlnet/{DIFFUSERS_WEIGHTS}*.safetensors*",
                    *TRANSFORMER_ADDITIONS.values()),
    weights=(("controlnet", DIFFUSERS_WEIGHTS),),
    tensor_files=tuple(TRANSFORMER_ADDITIONS.values()),
)

COGVIDEOX = Component(
    name="cogvideox",
    title="CogVideoX1.5-5B (transformer, VAE, T5, tokenizer, scheduler)",
    folder=COGVIDEOX_FOLDER,
    required=True,
    requires=COGVIDEOX_FILES,
    hand_copy="model_index.json and the folders transformer/, vae/, text_encoder/, tokenizer/, scheduler/",
    repo_id=COGVIDEOX_REPO,
    revision=COGVIDEOX_REVISION,
    allow_patterns=("model_index.json", "transformer/*", "vae/*", "text_encoder/*", "tokenizer/*", "scheduler/*"),
    weights=(("transformer", DIFFUSERS_WEIGHTS), ("vae", DIFFUSERS_WEIGHTS), ("text_encoder", "model")),
)

CAPTIONER = Component(
    name="captioner",
    title="Qwen3-VL-4B-Instruct video captioner (default: automatic captions)",
    folder=CAPTIONER_FOLDER,
    required=False,  # without it `restore` warns once and uses empty captions
    default=True,
    requires=CAPTIONER_FILES,
    hand_copy="the whole repository (config.json, model-0000N-of-00002.safetensors, model.safetensors.index.json "
              "and the tokenizer, processor and chat template files)",
    repo_id=CAPTIONER_REPO,
    revision=CAPTIONER_REVISION,
    # Everything but the model card and git attributes.
    ignore_patterns=("*.md", ".gitattributes"),
    weights=(("", "model"),),
)

TEXTFIX = Component(
    name="textfix",
    title="Real-ESRGAN x2plus (optional: text fix)",
    folder=REALESRGAN_FOLDER,
    required=False,
    requires=REALESRGAN_FILES,
    hand_copy=REALESRGAN_FILE,
    url=REALESRGAN_URL,
    sha256=REALESRGAN_SHA256,
    size=REALESRGAN_SIZE,
)

COMPONENTS: dict[str, Component] = {c.name: c for c in (VIVIDVR, COGVIDEOX, CAPTIONER, TEXTFIX)}
# What `download` accepts: one component, or a group. "default" (what `vividvr models download`
# fetches): what `vividvr restore` uses with no caption option, i.e. the restoration models and the
# captioner; "required": the restoration models alone (`restore` refuses to run without them);
# "all": every component.
GROUPS: dict[str, tuple[str, ...]] = {
    **{name: (name,) for name in COMPONENTS},
    "default": tuple(c.name for c in COMPONENTS.values() if c.required or c.default),
    "required": tuple(c.name for c in COMPONENTS.values() if c.required),
    "all": tuple(COMPONENTS),
}
DEFAULT_GROUP = "default"
CHOICES = tuple(GROUPS)


# --------------------------------------------------------------------------------------------- locating

def default_ckpt_dir() -> Path:
    """`vividvr` under the Hugging Face home: `$HF_HOME/vividvr`, by default `~/.cache/huggingface/vividvr`.

    Next to (not inside) the hub cache: the files are a plain folder in the official layout, so they can be
    copied, inspected and used by the reference code as they are.
    """
    home = os.environ.get("HF_HOME")
    if not home:
        from huggingface_hub import constants

        home = constants.HF_HOME
    return Path(home).expanduser() / "vividvr"


def resolve_ckpt_dir(cli_value: str | os.PathLike | None = None) -> Path:
    """The checkpoint folder: `--ckpt-dir`, else `$VIVIDVR_CKPT_DIR`, else `default_ckpt_dir()`. Absolute."""
    for value in (cli_value, os.environ.get(CKPT_ENV)):
        if value is not None and str(value).strip():
            return Path(str(value).strip()).expanduser().absolute()
    return default_ckpt_dir().absolute()


def download_command(what: str, ckpt_dir: str | os.PathLike) -> str:
    """The `vividvr models download` command line that fetches `what` into `ckpt_dir` (for messages):
    `--ckpt-dir` is added only when `ckpt_dir` is not the folder the command would use anyway."""
    command = f"vividvr models download --what {what}"
    folder = Path(ckpt_dir).expanduser().absolute()
    if folder != resolve_ckpt_dir(None):
        command += f" --ckpt-dir {shlex.quote(str(folder))}"
    return command


# --------------------------------------------------------------------------------------------- helpers

def walk_files(folder: Path) -> Iterator[Path]:
    """Files under `folder`, skipping hidden files and folders (e.g. `.cache/huggingface` download metadata).

    Nothing when `folder` does not exist or is not a folder (`os.walk` ignores the error).
    """
    for d, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        for n in sorted(names):
            if not n.startswith("."):
                yield Path(d, n)


def read_json(path: Path) -> object:
    return json.loads(path.read_text(encoding="utf-8"))


def index_shards(index: Path) -> list[str] | None:
    """Shard file names an index names, or None when the index is unreadable (reported elsewhere)."""
    try:
        weight_map = read_json(index)["weight_map"]  # type: ignore[index]
        return sorted(set(weight_map.values()))
    except Exception:
        return None


def missing_files(component: Component, root: Path) -> list[Path]:
    """Required files of a component that are not on disk (shards named by an index included)."""
    base = component.path(root)
    missing: list[Path] = []
    for alternatives in component.requires:
        present = [base / rel for rel in alternatives if (base / rel).is_file()]
        if not present:
            missing.append(base / alternatives[0])
            continue
        for found in present:
            if found.name.endswith(".index.json"):
                shards = index_shards(found) or []
                missing += [found.parent / s for s in shards if not (found.parent / s).is_file()]
    return missing


def hf_download_dir(base: Path) -> Path:
    """Where huggingface_hub keeps its download metadata (and `.incomplete` files) inside a `local_dir`."""
    return base / ".cache" / "huggingface" / "download"


def download_metadata(base: Path, rel: str) -> tuple[str, str] | None:
    """(commit, etag) that huggingface_hub recorded when it downloaded `rel` into `base`, if any.

    Format of `<base>/.cache/huggingface/download/<rel>.metadata`: commit hash, etag, timestamp, one a line.
    For LFS files the etag is the sha256 of the content; for small files it is the git blob sha1.
    """
    meta = hf_download_dir(base) / f"{rel}.metadata"
    try:
        lines = meta.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    if len(lines) < 2 or not lines[0].strip():
        return None
    return lines[0].strip(), lines[1].strip().strip('"')


# --------------------------------------------------------------------------------------------- hashes

def _hash_file(h, path: Path, chunk: int = 1 << 22) -> str:
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    return _hash_file(hashlib.sha256(), path, chunk)


def git_blob_sha1(path: Path) -> str:
    h = hashlib.sha1()
    h.update(f"blob {path.stat().st_size}\0".encode())
    return _hash_file(h, path)


def pinned_mismatch(path: Path, c: Component) -> str | None:
    """Why a pinned file (size, sha256) is not the expected one, or None when it is."""
    size = path.stat().st_size
    if c.size is not None and size != c.size:
        return f"has {size} bytes, expected {c.size} (truncated or a different file)"
    if c.sha256 and sha256_file(path) != c.sha256:
        return f"sha256 differs from the pinned {c.sha256} (corrupted or a different file)"
    return None
