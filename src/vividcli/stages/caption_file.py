"""The --captions-file format: JSON [clip][tile] -> caption, tiles row-major (one per latent tile).

`vividvr caption` writes it (`write_captions_file`), a person may edit it, `restore --captions-file`
reads it back (`load_captions_file`); `parse_captions` checks any captions against a plan.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from vividcli.errors import UsageError, VividError
from vividcli.files import atomic_write_text


def load_captions_file(path: str | Path, num_clips: int | None = None, num_tiles: int | None = None
                       ) -> list[list[str]]:
    """Read and check a --captions-file: JSON [clip][tile] -> caption, tiles row-major.

    Without counts only the structure is checked (what the CLI does before any input is opened).
    """
    name = str(path)
    if not Path(path).is_file():
        what = "is a folder" if Path(path).is_dir() else "does not exist"
        raise UsageError(f"captions file {name} {what}; pass a JSON file (`vividvr caption` writes one)")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read captions file {name}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"captions file {name} is not UTF-8 text (byte {exc.start}); save it as UTF-8 JSON") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"captions file {name} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from exc
    return parse_captions(data, num_clips, num_tiles, source=f"captions file {name}")


def parse_captions(data: object, num_clips: int | None, num_tiles: int | None, source: str = "captions"
                   ) -> list[list[str]]:
    """Check decoded captions JSON: exactly num_clips lists of exactly num_tiles strings (None: any number)."""
    clips_text = "a list" if num_clips is None else f"a list of {num_clips}"
    tiles_text = "" if num_tiles is None else f"{num_tiles} "
    shape = f"{clips_text} clip(s), each a list of {tiles_text}caption string(s) in row-major tile order"
    tiles_hint = f"expected {num_tiles} (one per latent tile, row-major)"
    if not isinstance(data, list):
        raise UsageError(f"{source}: expected {shape}, got a JSON {_json_type(data)}")
    for c, clip in enumerate(data):
        if not isinstance(clip, list):
            raise UsageError(
                f"{source}: clip {c} must be a list of caption strings, got a JSON {_json_type(clip)} "
                f"(expected {shape}; a single clip is still wrapped: [[...]])"
            )
    if num_clips is not None and len(data) != num_clips:
        raise UsageError(f"{source}: has {len(data)} clip(s), expected {shape}")
    for c, clip in enumerate(data):
        if num_tiles is not None and len(clip) != num_tiles:
            raise UsageError(f"{source}: clip {c} has {len(clip)} caption(s), {tiles_hint}")
        for t, caption in enumerate(clip):
            if not isinstance(caption, str):
                kind = _json_type(caption)
                raise UsageError(f"{source}: clip {c} tile {t} must be a string, got a JSON {kind}")
    return [list(clip) for clip in data]


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def write_captions_file(path: str | os.PathLike[str], captions: Sequence[Sequence[str]]) -> Path:
    """Write captions[clip][tile] as the JSON that `--captions-file` reads; atomic (temp + rename)."""
    data = parse_captions([list(c) for c in captions], len(captions), len(captions[0]) if captions else 0,
                          source="captions to write")
    path = Path(path)
    try:
        atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise VividError(f"cannot write captions file {path}: {exc.strerror or exc}") from exc
    return path
