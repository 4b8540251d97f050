"""Prompts, caption tiles and the captions file against the reference goldens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vividcli.errors import UsageError
from vividcli.planning.captions import plan_caption_regions, plan_reference_caption_tiles
from vividcli.planning.geometry import plan_geometry
from vividcli.planning.tiles import plan_tiles
from vividcli.stages.caption_file import load_captions_file, parse_captions
from vividcli.stages.prompts import NEGATIVE_PROMPT, POSITIVE_SUFFIX, build_prompts

CASES = ["case_c_whole_video", "case_d_temporal_aggregation"]


def _golden(reference_dir: Path, case: str) -> dict:
    return json.loads((reference_dir / "golden" / f"{case}.json").read_text())


@pytest.mark.parametrize("case", CASES)
def test_prompts_match_golden(reference_dir: Path, case: str) -> None:
    golden = _golden(reference_dir, case)
    for clip, pre in enumerate(golden["pre_denoise"]):
        captions = [call["caption"] for call in golden["captioner_calls"] if call["clip"] == clip]
        positives, negatives = build_prompts(captions)
        assert positives == pre["prompts"]
        assert negatives == pre["negative_prompts"]
    assert golden["pre_denoise"][0]["prompts"][0].endswith(" " + POSITIVE_SUFFIX)
    assert golden["pre_denoise"][0]["negative_prompts"][0] == NEGATIVE_PROMPT


@pytest.mark.parametrize("case", CASES)
def test_caption_tiles_match_golden(reference_dir: Path, case: str) -> None:
    golden = _golden(reference_dir, case)
    gen_height, gen_width = golden["gen_height_width"]
    tile_size = golden["args"]["tile_size"]
    tiles = plan_reference_caption_tiles(gen_height, gen_width, tile_size)
    calls = [call for call in golden["captioner_calls"] if call["clip"] == 0]
    assert len(tiles) == len(calls) == len(golden["tiles"])
    for tile, call in zip(tiles, calls):
        assert [tile.height, tile.width] == call["tile_video_shape"][-2:]
    regions = plan_caption_regions(gen_height, gen_width, tile_size)
    assert [(r.h0, r.h1, r.w0, r.w1) for r in regions] == [(t.h0, t.h1, t.w0, t.w1) for t in tiles]


def test_case_c_caption_tiles_are_not_latent_tiles_times_8() -> None:
    # Pixel stride is evened on 105 px (19), latent stride on 13 latents (3 -> 24 px).
    tiles = plan_reference_caption_tiles(64, 105, 6)
    assert sorted({t.w0 for t in tiles}) == [0, 19, 38, 57]
    assert sorted({t.h0 for t in tiles}) == [0, 16]
    assert sorted({8 * t.w0 for t in plan_tiles(8, 13, 6, 3)}) == [0, 24, 48, 56]


def test_count_mismatch_uses_latent_tiles() -> None:
    # README section 9: tile 128 and 1025..1031 px -> 2 caption tiles per axis, 1 latent tile.
    assert len(plan_reference_caption_tiles(1025, 1030, 128)) == 4
    regions = plan_caption_regions(1025, 1030, 128)
    assert [(r.h0, r.h1, r.w0, r.w1) for r in regions] == [(0, 1025, 0, 1030)]
    # Tile 6: 73 px -> 3 pixel tiles but 9 latents -> 2 latent tiles; the other axis keeps pixel tiles.
    assert len(plan_reference_caption_tiles(64, 73, 6)) == 6
    regions = plan_caption_regions(64, 73, 6)
    assert [(r.h0, r.h1, r.w0, r.w1) for r in regions] == [
        (0, 48, 0, 48), (0, 48, 24, 73), (16, 64, 0, 48), (16, 64, 24, 73)
    ]


@settings(max_examples=100, deadline=None)
@given(height=st.integers(8, 400), width=st.integers(8, 400), tile=st.integers(2, 40))
def test_one_caption_region_per_latent_tile(height: int, width: int, tile: int) -> None:
    geometry = plan_geometry(height, width, 1.0, tile)
    gen_height, gen_width = geometry.gen_size
    latent_tiles = plan_tiles(*geometry.latent_size, tile, tile // 2)
    regions = plan_caption_regions(gen_height, gen_width, tile)
    assert len(regions) == len(latent_tiles)
    assert all(0 <= r.h0 < r.h1 <= gen_height and 0 <= r.w0 < r.w1 <= gen_width for r in regions)
    reference = plan_reference_caption_tiles(gen_height, gen_width, tile)
    if len(reference) == len(latent_tiles):
        assert [(r.h0, r.h1, r.w0, r.w1) for r in regions] == [(t.h0, t.h1, t.w0, t.w1) for t in reference]
    else:
        # Only possible when a gen length is not a multiple of 8 (left unrounded, >= one pixel tile).
        assert gen_height % 8 or gen_width % 8
        assert len(reference) > len(latent_tiles)


def test_load_captions_file(tmp_path: Path) -> None:
    path = tmp_path / "captions.json"
    path.write_text(json.dumps([["a", "b"], ["c", ""]]), encoding="utf-8")
    assert load_captions_file(path, num_clips=2, num_tiles=2) == [["a", "b"], ["c", ""]]


@pytest.mark.parametrize(
    "data, match",
    [
        ({"clips": []}, "expected a list of 1 clip"),
        ("a caption", "got a JSON string"),
        ([["a", "b"], ["c", "d"]], "has 2 clip\\(s\\), expected a list of 1 clip"),
        ([["a"]], "clip 0 has 1 caption"),
        (["a", "b"], "clip 0 must be a list of caption strings, got a JSON string .*\\[\\[\\.\\.\\.\\]\\]"),
        ([["a", 3]], "clip 0 tile 1 must be a string, got a JSON number"),
        ([["a", None]], "got a JSON null"),
    ],
)
def test_parse_captions_rejects_wrong_structure(data: object, match: str) -> None:
    with pytest.raises(UsageError, match=match) as info:
        parse_captions(data, num_clips=1, num_tiles=2, source="captions file x.json")
    message = str(info.value)
    assert "\n" not in message and message.startswith("captions file x.json: ")
    assert info.value.exit_code == 2


def test_load_captions_file_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="missing.json does not exist"):
        load_captions_file(tmp_path / "missing.json", 1, 1)
    with pytest.raises(UsageError, match="is a folder"):
        load_captions_file(tmp_path, 1, 1)
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes('[["caf\xe9"]]'.encode("latin-1"))
    with pytest.raises(UsageError, match="not UTF-8"):
        load_captions_file(latin1, 1, 1)
    assert load_captions_file(_write(tmp_path / "any.json", [["a"], ["b", "c"]])) == [["a"], ["b", "c"]]
    bad = tmp_path / "bad.json"
    bad.write_text('[["a",]]', encoding="utf-8")
    with pytest.raises(UsageError, match="not valid JSON .* line 1"):
        load_captions_file(bad, 1, 1)


def _write(path: Path, data) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path
