"""Model management: what can be downloaded, where it goes, and what is on disk.

Everything lives in one checkpoint folder in the official Vivid-VR layout (see `COMPONENTS`):

    <ckpt-dir>/Vivid-VR/                 csbhr/Vivid-VR                 (required)
    <ckpt-dir>/CogVideoX1.5-5B/          zai-org/CogVideoX1.5-5B        (required)
    <ckpt-dir>/cogvlm2-llama3-caption/   zai-org/cogvlm2-llama3-caption (optional: automatic captions)
    <ckpt-dir>/RealESRGAN/RealESRGAN_x2plus.pth  Real-ESRGAN v0.2.1     (optional: text fix)

The folder is found by `resolve_ckpt_dir` (one rule for every command): `--ckpt-dir`, else
`$VIVIDVR_CKPT_DIR`, else `vividvr` under the Hugging Face home (`$HF_HOME`, by default
`~/.cache/huggingface/vividvr`).

`download` fetches pinned revisions with `huggingface_hub.snapshot_download(local_dir=...)` (resumable,
its own progress bars) or, for the GitHub release file, with urllib into a `.partial` file that is
size- and sha256-checked before it is renamed into place. Offline mode (`HF_HUB_OFFLINE=1`) and
network failures raise one `VividError` line that says how to copy the files in by hand.

`verify` checks the files without loading any tensor data: required files present, JSON parses,
safetensors headers readable, file sizes equal to what the headers declare (truncation), shards
consistent with their index, `.pt` files readable with `weights_only=True`, and every key and shape
equal to what the model classes built on the meta device from the checkpoint's own config.json expect.

Nothing heavy is imported at module level: `path`, `list` and `download` stay fast; only `verify`
imports torch and the model classes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from vividcli.errors import VividError

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
# THUDM/cogvlm2-llama3-caption (now zai-org, same history) commit d8db667 "Update README.md",
# 2024-09-19: all weights and code files of the release (weights unchanged in later commits).
CAPTIONER_REVISION = "d8db667c68f34e73b8895bbce002e3104c64563e"

# Real-ESRGAN x2plus, GitHub release v0.2.1. The release page publishes no checksum; this sha256 and size
# are the ones independent packagers pin (e.g. the AUR python-realesrgan PKGBUILD and several model
# registries agree), not an upstream statement.
REALESRGAN_URL = "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.1/RealESRGAN_x2plus.pth"
REALESRGAN_SHA256 = "49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb"
REALESRGAN_SIZE = 67_061_725

_WEIGHTS = "diffusion_pytorch_model"


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
    required: bool
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

    @property
    def source(self) -> str:
        if self.repo_id:
            return f"huggingface.co/{self.repo_id} at revision {self.revision}"
        return str(self.url)

    def path(self, root: Path) -> Path:
        return Path(root) / self.folder


def _weights_alternatives(sub: str, name: str) -> tuple[str, ...]:
    prefix = f"{sub}/" if sub else ""
    return (f"{prefix}{name}.safetensors", f"{prefix}{name}.safetensors.index.json")


VIVIDVR = Component(
    name="vividvr",
    title="Vivid-VR ControlNet and control modules",
    folder="Vivid-VR",
    required=True,
    requires=(("controlnet/config.json",), _weights_alternatives("controlnet", _WEIGHTS),
              ("connectors.pt",), ("control_feat_proj.pt",), ("control_patch_embed.pt",)),
    hand_copy="controlnet/config.json, controlnet/diffusion_pytorch_model.safetensors, connectors.pt, "
              "control_feat_proj.pt and control_patch_embed.pt",
    repo_id="csbhr/Vivid-VR",
    revision=VIVIDVR_REVISION,
    # The files sit at the top of the model repository (the official README's `ckpts/Vivid-VR` tree, and
    # `hf download csbhr/Vivid-VR --local-dir ckpts/Vivid-VR` in third-party guides). The repository also
    # holds the test sets (testset.zip), which these patterns leave out. `download` checks the result
    # and says so if the layout ever differs.
    allow_patterns=("controlnet/config.json", "controlnet/diffusion_pytorch_model*.safetensors*",
                    "connectors.pt", "control_feat_proj.pt", "control_patch_embed.pt"),
    weights=(("controlnet", _WEIGHTS),),
    tensor_files=("connectors.pt", "control_feat_proj.pt", "control_patch_embed.pt"),
)

COGVIDEOX = Component(
    name="cogvideox",
    title="CogVideoX1.5-5B (transformer, VAE, T5, tokenizer, scheduler)",
    folder="CogVideoX1.5-5B",
    required=True,
    requires=(("model_index.json",), ("scheduler/scheduler_config.json",),
              ("transformer/config.json",), _weights_alternatives("transformer", _WEIGHTS),
              ("vae/config.json",), _weights_alternatives("vae", _WEIGHTS),
              ("text_encoder/config.json",), _weights_alternatives("text_encoder", "model"),
              ("tokenizer/spiece.model",), ("tokenizer/tokenizer_config.json",)),
    hand_copy="model_index.json and the folders transformer/, vae/, text_encoder/, tokenizer/, scheduler/",
    repo_id="zai-org/CogVideoX1.5-5B",
    revision=COGVIDEOX_REVISION,
    allow_patterns=("model_index.json", "transformer/*", "vae/*", "text_encoder/*", "tokenizer/*", "scheduler/*"),
    weights=(("transformer", _WEIGHTS), ("vae", _WEIGHTS), ("text_encoder", "model")),
)

CAPTIONER = Component(
    name="captioner",
    title="CogVLM2 video captioner (optional: automatic captions)",
    folder="cogvlm2-llama3-caption",
    required=False,
    requires=(("config.json",), _weights_alternatives("", "model"), ("configuration_cogvlm.py",),
              ("modeling_cogvlm.py",), ("tokenizer_config.json",)),
    hand_copy="the whole repository (config.json, *.py, tokenizer files, model-0000N-of-00006.safetensors "
              "and model.safetensors.index.json)",
    repo_id="zai-org/cogvlm2-llama3-caption",
    revision=CAPTIONER_REVISION,
    # Everything but the example picture and the model cards.
    ignore_patterns=("*.png", "*.md", ".gitattributes"),
    weights=(("", "model"),),
)

TEXTFIX = Component(
    name="textfix",
    title="Real-ESRGAN x2plus (optional: text fix)",
    folder="RealESRGAN",  # the official Vivid-VR layout: ckpts/RealESRGAN/RealESRGAN_x2plus.pth
    required=False,
    requires=(("RealESRGAN_x2plus.pth",),),
    hand_copy="RealESRGAN_x2plus.pth",
    url=REALESRGAN_URL,
    sha256=REALESRGAN_SHA256,
    size=REALESRGAN_SIZE,
)

COMPONENTS: dict[str, Component] = {c.name: c for c in (VIVIDVR, COGVIDEOX, CAPTIONER, TEXTFIX)}
# What `download` accepts: one component, "required" (what `vividvr restore` needs) or "all".
GROUPS: dict[str, tuple[str, ...]] = {
    **{name: (name,) for name in COMPONENTS},
    "required": tuple(c.name for c in COMPONENTS.values() if c.required),
    "all": tuple(COMPONENTS),
}
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


# --------------------------------------------------------------------------------------------- helpers

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _one_line(text: object, limit: int = 240) -> str:
    lines = [line.strip() for line in _ANSI.sub("", str(text)).splitlines() if line.strip()]
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _describe(exc: BaseException) -> str:
    text = _one_line(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _walk_files(folder: Path) -> Iterator[Path]:
    """Files under `folder`, skipping hidden files and folders (e.g. `.cache/huggingface` download metadata)."""
    for d, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        for n in sorted(names):
            if not n.startswith("."):
                yield Path(d, n)


def _read_json(path: Path) -> object:
    return json.loads(path.read_text(encoding="utf-8"))


def _index_shards(index: Path) -> list[str] | None:
    """Shard file names an index names, or None when the index is unreadable (reported elsewhere)."""
    try:
        weight_map = _read_json(index)["weight_map"]  # type: ignore[index]
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
                shards = _index_shards(found) or []
                missing += [found.parent / s for s in shards if not (found.parent / s).is_file()]
    return missing


def _offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE")
    if value is not None:
        return value.strip().upper() in {"1", "ON", "YES", "TRUE"}
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:  # pragma: no cover
        return False


def _hand_copy_hint(component: Component, root: Path) -> str:
    return (f"on a machine with network run `vividvr models download --what {component.name}` "
            f"(or fetch {component.source}), then copy {component.hand_copy} into "
            f"{component.path(root)} and check with `vividvr models verify` (see {DOCS_HINT})")


# --------------------------------------------------------------------------------------------- download

def download(what: str, ckpt_dir: str | os.PathLike, *, progress: bool = True) -> list[Path]:
    """Download `what` into `ckpt_dir`: a component (`vividvr`, `cogvideox`, `captioner`, `textfix`),
    `required` (vividvr + cogvideox, what `vividvr restore` needs) or `all`.

    Returns the component folders. Interrupted downloads resume; complete ones are not fetched again.
    Raises a one-line `VividError` when offline mode is on (and the files are not there yet), the network
    fails, or the downloaded files do not form the expected layout.
    """
    if what not in GROUPS:
        raise VividError(f"unknown model {what!r}; choose one of {', '.join(CHOICES)}", exit_code=2)
    root = Path(ckpt_dir)
    return [_download_one(COMPONENTS[name], root, progress=progress) for name in GROUPS[what]]


def _download_one(component: Component, root: Path, *, progress: bool) -> Path:
    target = component.path(root)
    if _offline():
        if target.exists() and not missing_files(component, root):
            return target  # nothing to fetch; offline, so not compared with the pinned revision
        raise VividError(f"cannot download {component.name}: offline mode is on (HF_HUB_OFFLINE=1); "
                         + _hand_copy_hint(component, root))
    if component.repo_id:
        _snapshot(component, root, progress=progress)
    else:
        _fetch_file(component, root, progress=progress)
    missing = missing_files(component, root)
    if missing:
        raise VividError(f"downloaded {component.source} but {missing[0]} is missing: the repository layout "
                         f"differs from the one this version expects; " + _hand_copy_hint(component, root))
    return target


_NETWORK_ERRORS = ("ConnectError", "ConnectTimeout", "ReadTimeout", "TimeoutException", "NetworkError",
                   "ConnectionError", "LocalEntryNotFoundError", "OfflineModeIsEnabled", "URLError",
                   "gaierror", "TimeoutError", "RemoteProtocolError", "ProxyError")


def _is_network_error(exc: BaseException | None) -> bool:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if any(k.__name__ in _NETWORK_ERRORS for k in type(exc).__mro__):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _network_failure(component: Component, root: Path, exc: BaseException) -> VividError:
    cause = exc
    while (cause.__cause__ or cause.__context__) is not None:
        cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
    return VividError(f"cannot download {component.name}: no network connection ({_describe(cause)}); "
                      + _hand_copy_hint(component, root))


def _snapshot(component: Component, root: Path, *, progress: bool) -> None:
    import huggingface_hub
    from huggingface_hub import errors as hf_errors
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    target = component.path(root)
    target.mkdir(parents=True, exist_ok=True)
    was_disabled = are_progress_bars_disabled()
    if not progress:
        disable_progress_bars()
    try:
        huggingface_hub.snapshot_download(
            component.repo_id,
            revision=component.revision,
            local_dir=target,
            allow_patterns=list(component.allow_patterns) if component.allow_patterns else None,
            ignore_patterns=list(component.ignore_patterns) if component.ignore_patterns else None,
        )
    except (hf_errors.RevisionNotFoundError, hf_errors.RepositoryNotFoundError, hf_errors.GatedRepoError) as exc:
        raise VividError(f"cannot download {component.name} from {component.source}: {_describe(exc)}; "
                         + _hand_copy_hint(component, root)) from exc
    except Exception as exc:
        if _is_network_error(exc):
            raise _network_failure(component, root, exc) from exc
        raise VividError(f"download of {component.name} from {component.source} failed ({_describe(exc)}); "
                         f"run the same command again to resume") from exc
    finally:
        if not progress and not was_disabled:
            enable_progress_bars()


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _fetch_file(component: Component, root: Path, *, progress: bool) -> None:
    """One file from a URL: `.partial` (resumed with an HTTP range when possible), size + sha256, rename."""
    import urllib.error
    import urllib.request

    from vividcli import __version__

    dest = component.path(root) / component.requires[0][0]
    if dest.is_file() and _file_ok(dest, component):
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    have = partial.stat().st_size if partial.is_file() else 0
    if component.size is not None and have > component.size:
        partial.unlink()
        have = 0
    request = urllib.request.Request(str(component.url), headers={"User-Agent": f"vividcli/{__version__}"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            resumed = bool(have) and getattr(response, "status", None) == 206
            if not resumed:
                have = 0
            total = component.size or (int(response.headers.get("Content-Length") or 0) + have) or None
            _stream(response, partial, append=resumed, done=have, total=total, progress=progress, label=dest.name)
    except urllib.error.HTTPError as exc:
        if not (exc.code == 416 and have):  # 416: the partial file already holds everything
            raise VividError(f"cannot download {component.name} from {component.url}: HTTP {exc.code} {exc.reason}; "
                             + _hand_copy_hint(component, root)) from exc
    except OSError as exc:  # URLError, socket errors, timeouts, but also a full disk
        if isinstance(exc, urllib.error.URLError) or _is_network_error(exc):
            raise _network_failure(component, root, exc) from exc
        raise VividError(f"download of {component.name} failed ({_describe(exc)}); "
                         f"run the same command again to resume") from exc
    size = partial.stat().st_size
    if component.size is not None and size < component.size:
        raise VividError(f"download of {component.name} stopped at {size} of {component.size} bytes "
                         f"({partial}); run the same command again to resume")
    if component.size is not None and size != component.size:
        partial.unlink()
        raise VividError(f"downloaded {component.url} has {size} bytes, expected {component.size}; "
                         f"the file was deleted, run the command again")
    if component.sha256:
        digest = sha256_file(partial)
        if digest != component.sha256:
            partial.unlink()
            raise VividError(f"downloaded {component.url} has sha256 {digest}, expected {component.sha256}; "
                             f"the file was deleted, run the command again")
    os.replace(partial, dest)


def _stream(response, partial: Path, *, append: bool, done: int, total: int | None, progress: bool,
            label: str) -> None:
    from tqdm.auto import tqdm

    with open(partial, "ab" if append else "wb") as f, tqdm(
        total=total, initial=done, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
        disable=not progress, leave=False,
    ) as bar:
        while block := response.read(1 << 20):
            f.write(block)
            bar.update(len(block))
        f.flush()
        os.fsync(f.fileno())


def _file_ok(path: Path, component: Component) -> bool:
    if component.size is not None and path.stat().st_size != component.size:
        return False
    return not component.sha256 or sha256_file(path) == component.sha256


# --------------------------------------------------------------------------------------------- list

@dataclass(frozen=True)
class ComponentStatus:
    """What `vividvr models list` shows for one component."""

    name: str
    title: str
    path: Path
    required: bool
    state: str  # present | missing | incomplete
    size_bytes: int
    revision: str | None  # commit recorded by huggingface_hub when downloaded; None when copied by hand
    missing: tuple[Path, ...] = ()
    note: str = ""


def _download_metadata(base: Path, rel: str) -> tuple[str, str] | None:
    """(commit, etag) that huggingface_hub recorded when it downloaded `rel` into `base`, if any.

    Format of `<base>/.cache/huggingface/download/<rel>.metadata`: commit hash, etag, timestamp, one a line.
    For LFS files the etag is the sha256 of the content; for small files it is the git blob sha1.
    """
    meta = base / ".cache" / "huggingface" / "download" / f"{rel}.metadata"
    try:
        lines = meta.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    if len(lines) < 2 or not lines[0].strip():
        return None
    return lines[0].strip(), lines[1].strip().strip('"')


def _interrupted(base: Path) -> bool:
    downloads = base / ".cache" / "huggingface" / "download"
    if downloads.is_dir() and any(downloads.rglob("*.incomplete")):
        return True
    return any(p.name.endswith(".partial") for p in base.glob("*.partial"))


def list_models(ckpt_dir: str | os.PathLike) -> list[ComponentStatus]:
    """Presence of every component (a quick look: file names only, see `verify` for contents)."""
    root = Path(ckpt_dir)
    statuses = []
    for c in COMPONENTS.values():
        base = c.path(root)
        files = list(_walk_files(base)) if base.is_dir() else []
        size = sum(p.stat().st_size for p in files if p.exists())
        missing = tuple(missing_files(c, root))
        if not files and not _interrupted(base):
            state = "missing"
        elif missing or _interrupted(base):
            state = "incomplete"
        else:
            state = "present"
        commits = Counter(m[0] for p in files
                          if (m := _download_metadata(base, p.relative_to(base).as_posix())) is not None)
        revision = commits.most_common(1)[0][0] if commits else None
        note = ""
        if state == "incomplete":
            note = (f"{missing[0]} is missing" if missing else "interrupted download") + \
                   f"; run `vividvr models download --what {c.name}` to finish"
        statuses.append(ComponentStatus(c.name, c.title, base, c.required, state, size, revision, missing, note))
    return statuses


# --------------------------------------------------------------------------------------------- verify

@dataclass(frozen=True)
class Problem:
    """One thing wrong with the checkpoint folder: the file, the key (if any), what is wrong. One line."""

    file: Path
    message: str
    key: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}: key '{self.key}'" if self.key else str(self.file)
        return _one_line(f"{where}: {self.message}", limit=400)


MAX_KEY_PROBLEMS = 5  # per file and kind; the rest is summed up in one line


@dataclass
class _Tensors:
    """Key -> (shape, file) of the tensors found, and the files that could not be read."""

    shapes: dict[str, tuple[tuple[int, ...], Path]] = field(default_factory=dict)
    broken: set[Path] = field(default_factory=set)


def verify(ckpt_dir: str | os.PathLike, *, components: Iterable[str] | None = None,
           hashes: bool = False) -> list[Problem]:
    """Every problem of the checkpoint folder, without loading tensor data; an empty list means all good.

    Checks the required components and every optional one that is on disk (or exactly `components`).
    With `hashes=True`, files downloaded by `vividvr models download` are also re-hashed and compared
    with the hashes recorded at download time (sha256 for large files, git sha1 for small ones); the
    Real-ESRGAN file is always compared with its pinned sha256.
    """
    root = Path(ckpt_dir)
    if not root.is_dir():
        return [Problem(root, "checkpoint folder does not exist; run `vividvr models download` or copy the "
                              f"checkpoints in by hand ({DOCS_HINT})")]
    if components is None:
        chosen = [c for c in COMPONENTS.values() if c.required or c.path(root).exists()]
    else:
        unknown = [n for n in components if n not in COMPONENTS]
        if unknown:
            raise VividError(f"unknown model {unknown[0]!r}; choose from {', '.join(COMPONENTS)}", exit_code=2)
        chosen = [COMPONENTS[n] for n in components]

    problems: list[Problem] = []
    found: dict[str, _Tensors] = {}
    for c in chosen:
        base = c.path(root)
        problems += [Problem(p, "missing") for p in missing_files(c, root)]
        problems += _check_json(base)
        for sub, name in c.weights:
            folder = base / sub if sub else base
            tensors, more = _check_safetensors_folder(folder, name)
            found[f"{c.name}/{sub}"] = tensors
            problems += more
        if c.tensor_files:
            tensors, more = _check_tensor_files(base, c.tensor_files, _tensor_file_prefixes())
            found[f"{c.name}/pt"] = tensors
            problems += more
        if c.url and (base / c.requires[0][0]).is_file():
            problems += _check_pinned_file(base / c.requires[0][0], c)
        if hashes:
            problems += _check_recorded_hashes(base)
    problems += _check_models(root, found)
    return problems


def _check_json(base: Path) -> list[Problem]:
    problems = []
    if not base.is_dir():
        return problems
    for path in _walk_files(base):
        if path.suffix == ".json":
            try:
                _read_json(path)
            except json.JSONDecodeError as exc:
                problems.append(Problem(path, f"invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"))
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(Problem(path, f"unreadable ({_describe(exc)})"))
    return problems


def read_safetensors_header(path: Path) -> tuple[dict, int]:
    """(header dict, file size the header implies). Raises ValueError with a one-line reason."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"truncated: {size} bytes, too short for a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise ValueError(f"truncated: {size} bytes on disk, but the header alone declares {n + 8}")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"not a safetensors file (header is not JSON: {_one_line(exc)})") from exc
    if not isinstance(header, dict):
        raise ValueError("not a safetensors file (header is not a JSON object)")
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    return header, 8 + n + max(ends, default=0)


def _check_safetensors_folder(folder: Path, name: str) -> tuple[_Tensors, list[Problem]]:
    tensors, problems = _Tensors(), []
    single, index = folder / f"{name}.safetensors", folder / f"{name}.safetensors.index.json"
    weight_map: dict[str, str] | None = None
    if single.is_file():
        files = [single]
    elif index.is_file():
        try:
            weight_map = dict(_read_json(index)["weight_map"])  # type: ignore[index]
        except Exception as exc:
            tensors.broken.add(index)  # keys unknown: the model checks leave this folder out
            if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError)):
                return tensors, problems  # reported by the JSON check
            return tensors, [Problem(index, f"not a safetensors index (no weight_map: {_describe(exc)})")]
        files = [folder / s for s in sorted(set(weight_map.values()))]
    else:
        tensors.broken.add(single)
        return tensors, problems  # reported as missing
    in_file: dict[Path, set[str]] = {}
    for file in files:
        if not file.is_file():
            tensors.broken.add(file)
            continue  # reported as missing
        keys = _read_safetensors_shapes(file, tensors, problems)
        if keys is None:
            tensors.broken.add(file)
            continue
        in_file[file] = keys
    if weight_map is not None:
        for key, shard in sorted(weight_map.items()):
            file = folder / shard
            if file in in_file and key not in in_file[file]:
                problems.append(Problem(file, f"listed in {index.name} but not in this file", key))
        for file, keys in in_file.items():
            for key in sorted(keys):
                if key not in weight_map:
                    problems.append(Problem(file, f"not listed in {index.name}", key))
                elif folder / weight_map[key] != file:
                    problems.append(Problem(file, f"{index.name} places it in {weight_map[key]}", key))
    return tensors, problems


def _read_safetensors_shapes(file: Path, tensors: _Tensors, problems: list[Problem]) -> set[str] | None:
    from safetensors import safe_open

    try:
        _, declared = read_safetensors_header(file)
    except (ValueError, OSError, KeyError, TypeError, IndexError) as exc:
        reason = _one_line(exc) if isinstance(exc, ValueError) else f"unreadable ({_describe(exc)})"
        problems.append(Problem(file, reason))
        return None
    actual = file.stat().st_size
    if actual < declared:
        problems.append(Problem(file, f"truncated: {actual} bytes on disk, the header declares {declared}"))
        return None
    if actual > declared:
        problems.append(Problem(file, f"{actual - declared} unexpected bytes after the {declared} the header declares"))
        return None
    try:
        keys = set()
        with safe_open(str(file), framework="pt", device="cpu") as f:
            for key in f.keys():
                shape = tuple(int(d) for d in f.get_slice(key).get_shape())
                if key in tensors.shapes:
                    problems.append(Problem(file, f"also in {tensors.shapes[key][1].name}", key))
                tensors.shapes[key] = (shape, file)
                keys.add(key)
    except Exception as exc:  # SafetensorError and friends
        problems.append(Problem(file, f"unreadable safetensors file ({_describe(exc)})"))
        return None
    return keys


def _check_tensor_files(base: Path, names: tuple[str, ...],
                        prefixes: dict[str, str] | None = None) -> tuple[_Tensors, list[Problem]]:
    """torch.save'd state dicts; keys are recorded under `prefixes[name]` (their place in the model)."""
    import pickle

    import torch

    tensors, problems = _Tensors(), []
    for name in names:
        path = base / name
        if not path.is_file():
            tensors.broken.add(path)
            continue  # reported as missing
        try:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc):
                    raise
                state = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
        except pickle.UnpicklingError as exc:
            problems.append(Problem(path, f"holds pickled objects other than tensors, refused (loading it could run "
                                          f"code: {_one_line(exc, 120)})"))
            tensors.broken.add(path)
            continue
        except Exception as exc:  # truncated zip, foreign file, ...
            problems.append(Problem(path, f"unreadable ({_describe(exc)})"))
            tensors.broken.add(path)
            continue
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            problems.append(Problem(path, "not a state dict of tensors"))
            tensors.broken.add(path)
            continue
        prefix = (prefixes or {}).get(name, "")
        for key, value in state.items():
            tensors.shapes[prefix + str(key)] = (tuple(value.shape), path)
        del state
    return tensors, problems


def _check_pinned_file(path: Path, c: Component) -> list[Problem]:
    size = path.stat().st_size
    if c.size is not None and size != c.size:
        return [Problem(path, f"has {size} bytes, expected {c.size} (truncated or a different file)")]
    if c.sha256 and sha256_file(path) != c.sha256:
        return [Problem(path, f"sha256 differs from the pinned {c.sha256} (corrupted or a different file)")]
    return []


def _git_blob_sha1(path: Path) -> str:
    h = hashlib.sha1()
    h.update(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def _check_recorded_hashes(base: Path) -> list[Problem]:
    problems = []
    if not base.is_dir():
        return problems
    for path in _walk_files(base):
        meta = _download_metadata(base, path.relative_to(base).as_posix())
        if meta is None:
            continue
        etag = meta[1].lower()
        if re.fullmatch(r"[0-9a-f]{64}", etag):
            actual, kind = sha256_file(path), "sha256"
        elif re.fullmatch(r"[0-9a-f]{40}", etag):
            actual, kind = _git_blob_sha1(path), "git sha1"
        else:
            continue
        if actual != etag:
            problems.append(Problem(path, f"{kind} {actual} differs from {etag} recorded at download "
                                          f"(revision {meta[0][:12]})"))
    return problems


# --- keys and shapes against the model classes (built on the meta device from the checkpoint's config)

def _check_models(root: Path, found: dict[str, _Tensors]) -> list[Problem]:
    problems: list[Problem] = []
    cog, viv = COGVIDEOX.path(root), VIVIDVR.path(root)
    if "cogvideox/transformer" in found:
        problems += _check_transformer(cog / "transformer", found["cogvideox/transformer"], viv,
                                       found.get("vividvr/pt"))
    if "vividvr/controlnet" in found:
        problems += _check_against_model("controlnet", viv / "controlnet", found["vividvr/controlnet"])
    if "cogvideox/vae" in found:
        problems += _check_against_model("vae", cog / "vae", found["cogvideox/vae"])
    if "cogvideox/text_encoder" in found:
        problems += _check_against_model("text_encoder", cog / "text_encoder", found["cogvideox/text_encoder"])
    return problems


def _quiet_libraries():
    """Silence diffusers/transformers info and warning logs while models are built (restored after)."""
    import contextlib
    import logging

    @contextlib.contextmanager
    def quiet():
        loggers = [logging.getLogger(n) for n in ("diffusers", "transformers")]
        levels = [lg.level for lg in loggers]
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)

    return quiet()


def _meta_model(kind: str, folder: Path):
    """The model class for `kind`, built on the meta device from `folder/config.json`."""
    import torch

    config = _read_json(folder / "config.json")
    with _quiet_libraries(), torch.device("meta"):
        if kind == "transformer":
            from vividcli.models.transformer import VividVRTransformer3DModel

            return VividVRTransformer3DModel.from_config(config)
        if kind == "controlnet":
            from vividcli.models.controlnet import VividVRControlNetModel

            return VividVRControlNetModel.from_config(config)
        if kind == "vae":
            from diffusers import AutoencoderKLCogVideoX

            return AutoencoderKLCogVideoX.from_config(config)
        from transformers import T5Config, T5EncoderModel

        return T5EncoderModel._from_config(T5Config.from_dict(config), attn_implementation="eager")


def _expected_shapes(kind: str, folder: Path) -> tuple[dict[str, tuple[int, ...]] | None, list[Problem]]:
    config = folder / "config.json"
    if not config.is_file():
        return None, []  # reported as missing
    try:
        _read_json(config)
    except Exception:
        return None, []  # reported by the JSON check
    try:
        model = _meta_model(kind, folder)
    except Exception as exc:
        return None, [Problem(config, f"cannot build the {kind} from this config ({_describe(exc)})")]
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}, []


def _compare(expected: dict[str, tuple[int, ...]], actual: dict[str, tuple[tuple[int, ...], Path]],
             home: dict[str, Path], config: Path) -> list[Problem]:
    """Missing / wrong-shape / unexpected keys, at most MAX_KEY_PROBLEMS lines per file and kind."""
    groups: dict[tuple[Path, str], list[Problem]] = {}
    prefixes = _tensor_file_prefixes()

    def in_file(key: str, file: Path) -> str:
        """The key as the file spells it (.pt files hold keys relative to their module)."""
        prefix = prefixes.get(file.name, "") if file.suffix == ".pt" else ""
        return key[len(prefix):] if prefix and key.startswith(prefix) else key

    def add(file: Path, kind: str, problem: Problem) -> None:
        groups.setdefault((file, kind), []).append(problem)

    for key, shape in expected.items():
        if key not in actual:
            add(home[key], "missing", Problem(home[key], f"missing (the model expects shape {list(shape)})",
                                              in_file(key, home[key])))
        elif actual[key][0] != shape:
            got, file = actual[key]
            add(file, "shape", Problem(file, f"has shape {list(got)}, the model expects {list(shape)} "
                                             f"(built from {config})", in_file(key, file)))
    for key, (_, file) in actual.items():
        if key not in expected:
            add(file, "unexpected", Problem(file, "unexpected key (not in the model)", in_file(key, file)))
    problems = []
    for (file, kind), items in groups.items():
        problems += items[:MAX_KEY_PROBLEMS]
        if len(items) > MAX_KEY_PROBLEMS:
            label = {"missing": "missing keys", "shape": "keys with a wrong shape",
                     "unexpected": "unexpected keys"}[kind]
            problems.append(Problem(file, f"... and {len(items) - MAX_KEY_PROBLEMS} more {label}"))
    return problems


def _weights_home(folder: Path, name: str) -> Path:
    index = folder / f"{name}.safetensors.index.json"
    return index if index.is_file() else folder / f"{name}.safetensors"


def _tensor_file_prefixes() -> dict[str, str]:
    from vividcli.models.loading import TRANSFORMER_ADDITIONS

    return {name: prefix for prefix, name in TRANSFORMER_ADDITIONS.items()}


def _check_transformer(folder: Path, base: _Tensors, vivid: Path, additions: _Tensors | None) -> list[Problem]:
    """CogVideoX shards + the Vivid-VR .pt files against one meta `VividVRTransformer3DModel`.

    As the loader: shard tensors first, the .pt files fill (and win for) their prefixes. Parts whose files
    are missing or unreadable are left out (those files are reported already).
    """
    from vividcli.models.loading import TRANSFORMER_ADDITIONS

    expected_all, problems = _expected_shapes("transformer", folder)
    if expected_all is None:
        return problems
    backbone_home = _weights_home(folder, _WEIGHTS)

    def home(key: str) -> Path:
        prefix = next((p for p in TRANSFORMER_ADDITIONS if key.startswith(p)), None)
        return vivid / TRANSFORMER_ADDITIONS[prefix] if prefix else backbone_home

    usable = set()
    if not base.broken:
        usable.add(backbone_home)
    if additions is not None:
        usable |= {vivid / n for n in TRANSFORMER_ADDITIONS.values()} - additions.broken
    actual = dict(base.shapes) if not base.broken else {}
    if additions is not None:
        actual.update(additions.shapes)
    expected = {k: v for k, v in expected_all.items() if home(k) in usable}
    actual = {k: v for k, v in actual.items() if home(k) in usable}
    homes = {k: home(k) for k in expected}
    return problems + _compare(expected, actual, homes, folder / "config.json")


def _check_against_model(kind: str, folder: Path, found: _Tensors) -> list[Problem]:
    if found.broken:
        return []  # unreadable or missing files are reported already; key lists would only repeat that
    expected, problems = _expected_shapes(kind, folder)
    if expected is None:
        return problems
    actual = dict(found.shapes)
    if kind == "text_encoder":
        from vividcli.models.loading import T5_TIED_KEYS

        for tied, source in T5_TIED_KEYS.items():
            if tied not in actual and source in actual:
                actual[tied] = actual[source]
    name = "model" if kind == "text_encoder" else _WEIGHTS
    home = dict.fromkeys(expected, _weights_home(folder, name))
    return problems + _compare(expected, actual, home, folder / "config.json")
