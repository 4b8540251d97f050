"""Caption regions: the part of the gen-size video each caption describes, one per latent tile.

The reference captions every spatial tile of every temporal clip separately and gives tile i the
prompt built from caption i. It plans caption tiles in pixels on the gen-size video and latent
tiles on the latent grid, and the two do not always agree (see `plan_caption_regions`); vividvr
fixes one caption per *latent* tile.
"""

from __future__ import annotations

from dataclasses import dataclass

from vividcli.planning.geometry import VAE_SCALE
from vividcli.planning.plan import RestorePlan
from vividcli.planning.tiles import Tile, axis_tiling, plan_tiles


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


def caption_regions(plan: RestorePlan) -> list[CaptionRegion]:
    """The caption regions of `plan`, one per latent tile in the order of `plan.tiles`."""
    return plan_caption_regions(*plan.geometry.gen_size, plan.tile_size)
