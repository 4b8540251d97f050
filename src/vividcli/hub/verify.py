"""What is on disk: `list_models` (a quick look at file names) and `verify` (the contents).

`verify` checks the files without loading any tensor data: required files present, JSON parses,
safetensors headers readable, file sizes equal to what the headers declare (truncation), shards
consistent with their index, `.pt` files readable with `weights_only=True`, and every key and shape
equal to what the model classes built on the meta device from the checkpoint's own config.json expect
(those last checks are in `vividcli.hub.shapes`).

Nothing heavy is imported at module level; only `verify` imports torch and the model classes.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from vividcli.errors import VividError, describe_exception, first_line
from vividcli.hub.problems import Problem, TensorIndex
from vividcli.hub.registry import (
    COMPONENTS,
    DOCS_HINT,
    Component,
    download_metadata,
    git_blob_sha1,
    hf_download_dir,
    missing_files,
    pinned_mismatch,
    read_json,
    sha256_file,
    walk_files,
)
from vividcli.hub.shapes import check_models, tensor_file_prefixes

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


def _interrupted(base: Path) -> bool:
    downloads = hf_download_dir(base)
    if downloads.is_dir() and any(downloads.rglob("*.incomplete")):
        return True
    return any(p.name.endswith(".partial") for p in base.glob("*.partial"))


def list_models(ckpt_dir: str | os.PathLike) -> list[ComponentStatus]:
    """Presence of every component (a quick look: file names only, see `verify` for contents)."""
    root = Path(ckpt_dir)
    statuses = []
    for c in COMPONENTS.values():
        base = c.path(root)
        files = list(walk_files(base))
        size = sum(p.stat().st_size for p in files if p.exists())
        missing = tuple(missing_files(c, root))
        if not files and not _interrupted(base):
            state = "missing"
        elif missing or _interrupted(base):
            state = "incomplete"
        else:
            state = "present"
        commits = Counter(m[0] for p in files
                          if (m := download_metadata(base, p.relative_to(base).as_posix())) is not None)
        revision = commits.most_common(1)[0][0] if commits else None
        note = ""
        if state == "incomplete":
            note = (f"{missing[0]} is missing" if missing else "interrupted download") + \
                   f"; run `vividvr models download --what {c.name}` to finish"
        statuses.append(ComponentStatus(c.name, c.title, base, c.required, state, size, revision, missing, note))
    return statuses


# --------------------------------------------------------------------------------------------- verify

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
    found: dict[str, TensorIndex] = {}
    for c in chosen:
        problems += _check_component(c, root, found, hashes=hashes)
    problems += check_models(root, found)
    return problems


def _check_component(c: Component, root: Path, found: dict[str, TensorIndex], *, hashes: bool) -> list[Problem]:
    """The file checks of one component; the tensors found go into `found` for the model checks."""
    base = c.path(root)
    problems = [Problem(p, "missing") for p in missing_files(c, root)]
    problems += _check_json(base)
    for sub, name in c.weights:
        tensors, more = _check_safetensors_folder(base / sub if sub else base, name)
        found[f"{c.name}/{sub}"] = tensors
        problems += more
    if c.tensor_files:
        tensors, more = _check_tensor_files(base, c.tensor_files, tensor_file_prefixes())
        found[f"{c.name}/pt"] = tensors
        problems += more
    pinned = base / c.requires[0][0]
    if c.url and pinned.is_file() and (reason := pinned_mismatch(pinned, c)):
        problems.append(Problem(pinned, reason))
    if hashes:
        problems += _check_recorded_hashes(base)
    return problems


def _check_json(base: Path) -> list[Problem]:
    problems = []
    for path in walk_files(base):
        if path.suffix == ".json":
            try:
                read_json(path)
            except json.JSONDecodeError as exc:
                problems.append(Problem(path, f"invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"))
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(Problem(path, f"unreadable ({describe_exception(exc)})"))
    return problems


def _check_recorded_hashes(base: Path) -> list[Problem]:
    problems = []
    for path in walk_files(base):
        meta = download_metadata(base, path.relative_to(base).as_posix())
        if meta is None:
            continue
        etag = meta[1].lower()
        if re.fullmatch(r"[0-9a-f]{64}", etag):
            actual, kind = sha256_file(path), "sha256"
        elif re.fullmatch(r"[0-9a-f]{40}", etag):
            actual, kind = git_blob_sha1(path), "git sha1"
        else:
            continue
        if actual != etag:
            problems.append(Problem(path, f"{kind} {actual} differs from {etag} recorded at download "
                                          f"(revision {meta[0][:12]})"))
    return problems


# --------------------------------------------------------------------------------------------- tensor files

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
            raise ValueError(f"not a safetensors file (header is not JSON: {first_line(exc)})") from exc
    if not isinstance(header, dict):
        raise ValueError("not a safetensors file (header is not a JSON object)")
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    return header, 8 + n + max(ends, default=0)


def _check_safetensors_folder(folder: Path, name: str) -> tuple[TensorIndex, list[Problem]]:
    tensors, problems = TensorIndex(), []
    single, index = folder / f"{name}.safetensors", folder / f"{name}.safetensors.index.json"
    weight_map: dict[str, str] | None = None
    if single.is_file():
        files = [single]
    elif index.is_file():
        try:
            weight_map = dict(read_json(index)["weight_map"])  # type: ignore[index]
        except Exception as exc:
            tensors.broken.add(index)  # keys unknown: the model checks leave this folder out
            if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError)):
                return tensors, problems  # reported by the JSON check
            return tensors, [Problem(index, f"not a safetensors index (no weight_map: {describe_exception(exc)})")]
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


def _read_safetensors_shapes(file: Path, tensors: TensorIndex, problems: list[Problem]) -> set[str] | None:
    from safetensors import safe_open

    try:
        _, declared = read_safetensors_header(file)
    except (ValueError, OSError, KeyError, TypeError, IndexError) as exc:
        reason = first_line(exc) if isinstance(exc, ValueError) else f"unreadable ({describe_exception(exc)})"
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
        problems.append(Problem(file, f"unreadable safetensors file ({describe_exception(exc)})"))
        return None
    return keys


def _check_tensor_files(base: Path, names: tuple[str, ...],
                        prefixes: dict[str, str] | None = None) -> tuple[TensorIndex, list[Problem]]:
    """torch.save'd state dicts; keys are recorded under `prefixes[name]` (their place in the model)."""
    tensors, problems = TensorIndex(), []
    for name in names:
        path = base / name
        if not path.is_file():
            tensors.broken.add(path)
            continue  # reported as missing
        state, reason = _load_state_dict(path)
        if state is None:
            problems.append(Problem(path, reason))
            tensors.broken.add(path)
            continue
        prefix = (prefixes or {}).get(name, "")
        for key, value in state.items():
            tensors.shapes[prefix + str(key)] = (tuple(value.shape), path)
        del state
    return tensors, problems


def _load_state_dict(path: Path) -> tuple[dict | None, str]:
    """(state dict of tensors, "") with `weights_only=True` (memory-mapped when possible), else (None, why)."""
    import pickle

    import torch

    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except pickle.UnpicklingError as exc:
        return None, (f"holds pickled objects other than tensors, refused (loading it could run "
                      f"code: {first_line(exc, 120)})")
    except Exception as exc:  # truncated zip, foreign file, ...
        return None, f"unreadable ({describe_exception(exc)})"
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        return None, "not a state dict of tensors"
    return state, ""
