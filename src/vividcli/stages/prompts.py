"""Text prompts: the fixed suffix/negative prompt, caption tiles, and the --captions-file format.

The reference captions every spatial tile of every temporal clip separately
and gives tile i the prompt built from caption i. Caption tiles are planned in
pixels on the gen-size video, latent tiles on the latent grid, and the two do
not always agree (see `plan_caption_regions`); this module fixes one caption per
*latent* tile.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from vividcli.errors import UsageError
from vividcli.sampling.tiling import Tile, axis_tiling, plan_tiles
from vividcli.stages.geometry import VAE_SCALE

POSITIVE_SUFFIX = (
    "Cinematic, High Contrast, highly detailed, taken using a Canon EOS R camera, hyper detailed photo - "
    "realistic maximum detail, 32k, Color Grading, ultra HD, extreme meticulous detailing, skin pore "
    "detailing, hyper sharpness, perfect without deformations."
)
NEGATIVE_PROMPT = (
    "painting, oil painting, illustration, drawing, art, sketch, oil painting, cartoon, CG Style, 3D render, "
    "unreal engine, blurring, dirty, messy, worst quality, low quality, frames, watermark, signature, jpeg "
    "artifacts, deformed, lowres, over-smooth"
)


def build_prompts(captions: Sequence[str]) -> tuple[list[str], list[str]]:
    """Per-tile (positive, negative) prompt lists: "<caption> <suffix>" and the fixed negative."""
    positives = [f"{caption} {POSITIVE_SUFFIX}" for caption in captions]
    negatives = [NEGATIVE_PROMPT for _ in captions]
    return positives, negatives


@dataclass(frozen=True)
class CaptionRegion:
    """Pixel box [h0, h1) x [w0, w1) of the gen-size caption video that one caption describes."""

    index: int
    h0: int
    h1: int
    w0: int
    w1: int


def plan_reference_caption_tiles(gen_height: int, gen_width: int, tile_size: int) -> list[Tile]:
    """The reference's caption tiles: the latent tiling rule applied to gen-size pixels.

    Tile size tile_size * 8 and stride (tile_size // 2) * 8 pixels, row-major
    (reference `prepare_validation_prompts`). Only the bounds matter here; the
    weight fields of the returned tiles are unused.
    """
    return plan_tiles(gen_height, gen_width, tile_size * VAE_SCALE, (tile_size // 2) * VAE_SCALE)


def plan_caption_regions(gen_height: int, gen_width: int, tile_size: int) -> list[CaptionRegion]:
    """One caption region per latent tile, row-major (our choice, matches the reference when it can).

    Per axis: if the reference's pixel tiling has as many tiles as the latent
    tiling, its pixel spans are used unchanged (so whenever both counts agree,
    which is every case with a gen size below one pixel tile or a multiple of 8,
    this equals `plan_reference_caption_tiles`). Otherwise the axis has a
    gen size of 8L + r (0 < r < 8) with L - tile_size a multiple of the stride,
    and the pixel rule makes one tile more than the latent rule (e.g. tile 128
    and 1025..1031 px: 2 caption tiles, 1 latent tile). The reference then pairs
    prompts and latent tiles by index, so latent tiles get captions of other
    regions and surplus captions are ignored. Instead each latent span [a, b)
    is used as pixels [8a, 8b), the last one stretched to the gen edge.
    """
    rows = _axis_regions(gen_height, tile_size)
    cols = _axis_regions(gen_width, tile_size)
    regions = []
    for h0, h1 in rows:
        for w0, w1 in cols:
            regions.append(CaptionRegion(index=len(regions), h0=h0, h1=h1, w0=w0, w1=w1))
    return regions


def _axis_regions(gen_length: int, tile_size: int) -> list[tuple[int, int]]:
    pixel_tile = tile_size * VAE_SCALE
    pixels = axis_tiling(gen_length, pixel_tile, (tile_size // 2) * VAE_SCALE)
    latent_length = gen_length // VAE_SCALE
    latents = axis_tiling(latent_length, tile_size, tile_size // 2)
    if len(pixels.starts) == len(latents.starts):
        return [(s, min(s + pixel_tile, gen_length)) for s in pixels.starts]
    spans = [(VAE_SCALE * s, VAE_SCALE * min(s + tile_size, latent_length)) for s in latents.starts]
    spans[-1] = (spans[-1][0], gen_length)
    return spans


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
