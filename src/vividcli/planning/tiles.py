"""Spatial tiling of the latent grid, as the Vivid-VR reference does it.

Each denoising step runs the model once per tile. Tile results are blended with
0/1 masks: every latent position takes its value from the single tile whose
"weight-one" region covers it (the reference divides by the summed weights, so a
position covered twice would be averaged and one covered by no tile would be
NaN; neither happens for valid strides, see `plan_tiles`).

Only spatial tiling is modelled: the reference switches temporal tiling off, so
every tile spans the whole time axis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vividcli.errors import UsageError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class AxisTiling:
    """Tile start offsets along one axis plus the sizes the weight rule needs."""

    starts: tuple[int, ...]
    tile_size: int
    # The reference evens out the spacing, so this can be smaller than the
    # requested stride; the weight rule must use this value.
    stride: int


@dataclass(frozen=True)
class Tile:
    """One spatial tile: latent bounds [h0, h1) x [w0, w1) and its weight-one region.

    `weight_rows` / `weight_cols` are [start, stop) ranges *local to the tile*
    (0 = first row/column of the tile) where the blend mask is 1; elsewhere it is 0.
    """

    index: int
    h0: int
    h1: int
    w0: int
    w1: int
    weight_rows: tuple[int, int]
    weight_cols: tuple[int, int]

    @property
    def height(self) -> int:
        return self.h1 - self.h0

    @property
    def width(self) -> int:
        return self.w1 - self.w0

    @property
    def slices(self) -> tuple[slice, slice]:
        """(rows, cols) slices selecting this tile from the latent grid."""
        return slice(self.h0, self.h1), slice(self.w0, self.w1)


def axis_tiling(size: int, tile_size: int, tile_stride: int) -> AxisTiling:
    """Tile start offsets along one axis (reference `create_start_indices`).

    If the axis fits in one tile there is a single tile at 0 (it may be shorter
    than `tile_size`). Otherwise the number of tiles is what `tile_stride` needs
    to reach the end, the stride is then evened out to
    ceil((size - tile) / (n - 1)), and a final tile flush with the end is added
    when the evened stride does not land there exactly.
    """
    _check_axis_args(size, tile_size, tile_stride)
    if size <= tile_size:
        return AxisTiling(starts=(0,), tile_size=tile_size, stride=tile_size)
    overhang = size - tile_size
    num_tiles = _ceil_div(overhang, tile_stride) + 1
    stride = _ceil_div(overhang, num_tiles - 1)
    starts = list(range(0, overhang + 1, stride))
    if overhang % stride != 0:
        starts.append(overhang)
    return AxisTiling(starts=tuple(starts), tile_size=tile_size, stride=stride)


def axis_weight_range(start: int, size: int, axis: AxisTiling) -> tuple[int, int]:
    """Local [lo, hi) range where the tile starting at `start` has weight 1.

    Reference `compute_valid_weights_range`: interior tiles give up
    (tile - stride) / 2 on each side (floor at the far side, ceil at the near
    side, so neighbours meet exactly); the first tile keeps its near edge and the
    tile touching the end keeps its far edge. The end-flush tile (start not a
    multiple of the stride) starts where its left neighbour's region stops.
    The result is clamped to the tile's real extent, which only matters for a
    tile shorter than `tile_size` (axis smaller than one tile); the reference's
    slice is clamped the same way by indexing.
    """
    tile, stride = axis.tile_size, axis.stride
    extent = min(start + tile, size) - start
    # (tile - stride) / 2 split into its floor and ceil; their sum is exactly
    # tile - stride, which is what makes neighbouring regions abut.
    margin_far = (tile - stride) // 2
    margin_near = (tile - stride + 1) // 2
    hi = tile - margin_far if start + extent < size else tile
    lo = margin_near if start > 0 else 0
    offset = start % stride
    if offset > 0:
        lo = tile - (margin_far + offset)
    return lo, min(hi, extent)


def plan_tiles(latent_height: int, latent_width: int, tile_size: int, tile_stride: int) -> list[Tile]:
    """All spatial tiles of a latent grid, row-major (rows outer, columns inner).

    This is the order the reference denoises tiles in, and therefore the order
    of per-tile prompts and of scheduler noise draws.

    Partition property: for 1 <= tile_stride <= tile_size the weight-one regions
    cover every latent position exactly once (checked exhaustively for sizes up
    to 200 and tiles up to 40, and by the property tests). For
    tile_stride > tile_size the reference leaves gaps (zero total weight, NaN
    after its division) and tile_stride 0 divides by zero, so both are rejected.
    The reference uses tile_stride = tile_size // 2, hence tile_size >= 2.
    """
    rows = axis_tiling(latent_height, tile_size, tile_stride)
    cols = axis_tiling(latent_width, tile_size, tile_stride)
    tiles: list[Tile] = []
    for h0 in rows.starts:
        for w0 in cols.starts:
            tiles.append(
                Tile(
                    index=len(tiles),
                    h0=h0,
                    h1=min(h0 + tile_size, latent_height),
                    w0=w0,
                    w1=min(w0 + tile_size, latent_width),
                    weight_rows=axis_weight_range(h0, latent_height, rows),
                    weight_cols=axis_weight_range(w0, latent_width, cols),
                )
            )
    return tiles


def tile_weight_mask(
    tile: Tile, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """0/1 blend mask of shape [1, 1, 1, h, w] (float32 unless `dtype`), broadcastable to a [B, T, C, h, w] tile."""
    import torch  # here, so that planning (e.g. `vividvr plan`) never loads torch

    mask = torch.zeros((1, 1, 1, tile.height, tile.width), dtype=dtype or torch.float32, device=device)
    r0, r1 = tile.weight_rows
    c0, c1 = tile.weight_cols
    mask[..., r0:r1, c0:c1] = 1
    return mask


def check_tiles_patchable(tiles: list[Tile], patch_size: int = 2) -> None:
    """Raise UsageError if a tile side is not a multiple of the transformer patch size.

    The reference has no such check and fails inside the patch embedding
    (CogVideoXPatchEmbed reshapes each tile into 2x2 patches). An odd tile size
    fails on any axis at least one tile long; an axis shorter than one tile
    gives tiles as long as the axis, which fails when it is odd
    (e.g. 40 px -> 5 latents).
    """
    for tile in tiles:
        if tile.height % patch_size or tile.width % patch_size:
            raise UsageError(
                f"latent tile {tile.index} is {tile.height}x{tile.width}, but the model needs sides that are "
                f"multiples of {patch_size}: use an even tile size, or a size/upscale whose latent grid "
                f"(pixels / 8) is even where it is smaller than one tile"
            )


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _check_axis_args(size: int, tile_size: int, tile_stride: int) -> None:
    if size < 1:
        raise ValueError(f"tiling needs a positive axis size, got {size}")
    if tile_size < 1:
        raise ValueError(f"tile size must be at least 1 latent, got {tile_size}")
    if not 1 <= tile_stride <= tile_size:
        raise ValueError(
            f"tile stride must be between 1 and the tile size ({tile_size}), got {tile_stride}"
        )
