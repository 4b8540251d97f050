"""Spatial tile planning against the reference goldens, plus partition properties."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vividcli.errors import UsageError
from vividcli.planning.tiles import Tile, axis_tiling, check_tiles_patchable, plan_tiles, tile_weight_mask


def _golden(reference_dir: Path, case: str) -> dict:
    return json.loads((reference_dir / "golden" / f"{case}.json").read_text())


def _as_golden(tile: Tile, latent_frames: int) -> dict:
    return {
        "t": [0, latent_frames],
        "h": [tile.h0, tile.h1],
        "w": [tile.w0, tile.w1],
        "weight_one_rows_local": list(tile.weight_rows),
        "weight_one_cols_local": list(tile.weight_cols),
    }


@pytest.mark.parametrize(
    "case",
    [
        "case_c_whole_video",
        "case_d_temporal_aggregation",
        "case_f_whole_video_frame_padding",
        "case_g_temporal_aggregation_padding",
    ],
)
def test_tiles_match_golden(reference_dir: Path, case: str) -> None:
    golden = _golden(reference_dir, case)
    _, frames, _, height, width = golden["latent_shape_BTCHW"]
    tile_size = golden["args"]["tile_size"]
    tiles = plan_tiles(height, width, tile_size, tile_size // 2)
    assert [_as_golden(t, frames) for t in tiles] == golden["tiles"]
    assert [t.index for t in tiles] == list(range(len(tiles)))


def test_case_c_axis_details() -> None:
    # 13 latents, tile 6, requested stride 3: evened stride stays 3, end-flush tile at 7.
    cols = axis_tiling(13, 6, 3)
    assert cols.starts == (0, 3, 6, 7) and cols.stride == 3
    # 8 latents: one stride of 3 overshoots, so the stride is evened to 2.
    rows = axis_tiling(8, 6, 3)
    assert rows.starts == (0, 2) and rows.stride == 2


def test_axis_smaller_than_tile_is_one_short_tile() -> None:
    tiles = plan_tiles(3, 5, 6, 3)
    assert len(tiles) == 1
    (tile,) = tiles
    assert (tile.h0, tile.h1, tile.w0, tile.w1) == (0, 3, 0, 5)
    # Clamped to the tile's real extent (the reference slice 0:6 clamps the same way).
    assert tile.weight_rows == (0, 3) and tile.weight_cols == (0, 5)


def test_weight_mask_shape_and_values() -> None:
    tile = plan_tiles(8, 13, 6, 3)[3]
    mask = tile_weight_mask(tile)
    assert mask.shape == (1, 1, 1, 6, 6) and mask.dtype == torch.float32
    expected = torch.zeros(6, 6)
    expected[0:4, 4:6] = 1
    assert torch.equal(mask[0, 0, 0], expected)
    # Broadcasts against a [B, T, C, h, w] tile.
    assert (torch.ones(2, 6, 16, 6, 6) * mask).shape == (2, 6, 16, 6, 6)


def test_weight_masks_reassemble_the_grid() -> None:
    height, width = 8, 13
    total = torch.zeros(1, 1, 1, height, width)
    for tile in plan_tiles(height, width, 6, 3):
        rows, cols = tile.slices
        total[..., rows, cols] += tile_weight_mask(tile)
    assert torch.equal(total, torch.ones_like(total))


def _coverage(height: int, width: int, tiles: list[Tile]) -> list[list[int]]:
    counts = [[0] * width for _ in range(height)]
    for tile in tiles:
        r0, r1 = tile.weight_rows
        c0, c1 = tile.weight_cols
        for r in range(tile.h0 + r0, tile.h0 + r1):
            for c in range(tile.w0 + c0, tile.w0 + c1):
                counts[r][c] += 1
    return counts


@settings(max_examples=200, deadline=None)
@given(height=st.integers(1, 64), width=st.integers(1, 64), tile=st.integers(2, 40))
def test_every_position_has_weight_from_exactly_one_tile(height: int, width: int, tile: int) -> None:
    tiles = plan_tiles(height, width, tile, tile // 2)
    assert all(count == 1 for row in _coverage(height, width, tiles) for count in row)


@settings(max_examples=300, deadline=None)
@given(size=st.integers(1, 300), tile=st.integers(1, 60), data=st.data())
def test_partition_holds_for_any_stride_up_to_tile(size: int, tile: int, data: st.DataObject) -> None:
    stride = data.draw(st.integers(1, tile))
    axis = axis_tiling(size, tile, stride)
    tiles = plan_tiles(1, size, tile, stride)
    assert [t.w0 for t in tiles] == list(axis.starts)
    assert _coverage(1, size, tiles) == [[1] * size]
    # Tiles stay inside the grid, start at 0, reach the end, and have full size when they can.
    assert tiles[0].w0 == 0 and tiles[-1].w1 == size
    assert all(t.width == min(tile, size) for t in tiles)
    assert size <= tile or axis.stride <= stride


@settings(max_examples=200, deadline=None)
@given(size=st.integers(2, 300), tile=st.integers(2, 60))
def test_tile_count_is_what_the_requested_stride_needs(size: int, tile: int) -> None:
    stride = tile // 2
    expected = 1 if size <= tile else -(-(size - tile) // stride) + 1
    assert len(axis_tiling(size, tile, stride).starts) == expected


@pytest.mark.parametrize("tile, stride", [(6, 0), (6, 7), (0, 0)])
def test_rejects_strides_that_break_the_partition(tile: int, stride: int) -> None:
    # Stride 0 divides by zero in the reference; stride > tile leaves unweighted gaps.
    with pytest.raises(ValueError):
        plan_tiles(10, 10, tile, stride)


def test_patchable_check() -> None:
    check_tiles_patchable(plan_tiles(8, 13, 6, 3))
    with pytest.raises(UsageError, match="even"):
        check_tiles_patchable(plan_tiles(5, 13, 6, 3))  # 40 px high -> 5 latents < one tile
    with pytest.raises(UsageError):
        check_tiles_patchable(plan_tiles(20, 20, 5, 2))  # odd tile size
