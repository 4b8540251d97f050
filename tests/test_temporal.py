"""Temporal aggregate sampling plan against the reference goldens, plus properties."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vividcli.errors import UsageError
from vividcli.planning.clips import (
    TemporalPlan,
    check_clip_frames,
    frame_padding,
    latent_frame_count,
    plan_temporal,
    uses_temporal_aggregation,
)


def _golden(reference_dir: Path, case: str) -> dict:
    return json.loads((reference_dir / "golden" / f"{case}.json").read_text())


def _printed_maps(golden: dict) -> tuple[dict, dict]:
    # The reference prints "Clip Id - Latent Id Map: {...}" and "Valid Latent Id - Clip Id Map: {...}".
    clip_line, owner_line = golden["stdout_excerpt_clip_maps"]
    return (
        ast.literal_eval(clip_line.split(": ", 1)[1]),
        ast.literal_eval(owner_line.split(": ", 1)[1]),
    )


@pytest.mark.parametrize("case", ["case_d_temporal_aggregation", "case_g_temporal_aggregation_padding"])
def test_maps_match_golden(reference_dir: Path, case: str) -> None:
    golden = _golden(reference_dir, case)
    num_frames = golden["input_shape_uint8_FHWC"][0]
    clip_frames = golden["args"]["num_temporal_process_frames"]
    assert uses_temporal_aggregation(num_frames, clip_frames)
    plan = plan_temporal(num_frames, clip_frames)
    clip_map, owner_map = _printed_maps(golden)
    assert plan.clip_latent_map() == clip_map
    assert plan.owner_map() == owner_map
    assert len(plan.clips) == golden["num_clips"]
    assert plan.output_frames == golden["output_frames_shape_THWC"][0]
    latent_frames = golden["latent_shape_BTCHW"][1]
    for clip, vae_in in zip(plan.clips, golden["vae_input"]):
        assert clip.padded_frames == vae_in["shape"][2]
        # Shared latents plus the two first-frame latents make the clip's latent axis.
        assert clip.latent_ids[1] - clip.latent_ids[0] + 2 == latent_frames


def test_case_d_clips_and_trims() -> None:
    plan = plan_temporal(41, 17)
    assert (plan.overlap_frames, plan.frame_stride, plan.overlap_latents, plan.latent_stride) == (9, 8, 2, 2)
    assert [(c.start, c.stop, c.padding) for c in plan.clips] == [(0, 17, 0), (8, 25, 0), (16, 33, 0), (24, 41, 0)]
    # Clip 0 keeps its first 13 frames, clips 1-2 frames 5..12, clip 3 frames 5..16.
    assert [c.keep for c in plan.clips] == [(0, 13), (5, 13), (5, 13), (5, 17)]


def test_case_g_last_clip_is_padded_then_trimmed() -> None:
    plan = plan_temporal(37, 17)
    assert [(c.start, c.stop, c.padding) for c in plan.clips] == [(0, 17, 0), (8, 25, 0), (16, 33, 0), (24, 37, 4)]
    assert plan.clips[-1].keep == (5, 13)
    assert plan.output_frames == 37


def test_case_d_merge_copies() -> None:
    copies = [(m.dst_clip, m.dst, m.src_clip, m.src) for m in plan_temporal(41, 17).merge]
    assert copies == [
        (0, (5, 6), 1, (3, 4)),
        (1, (2, 3), 0, (4, 5)),
        (1, (5, 6), 2, (3, 4)),
        (2, (2, 3), 1, (4, 5)),
        (2, (5, 6), 3, (3, 4)),
        (3, (2, 3), 2, (4, 5)),
    ]


@pytest.mark.parametrize("case, padding", [("case_f_whole_video_frame_padding", 3), ("case_c_whole_video", 0)])
def test_whole_video_padding_matches_golden(reference_dir: Path, case: str, padding: int) -> None:
    golden = _golden(reference_dir, case)
    num_frames = golden["input_shape_uint8_FHWC"][0]
    assert not uses_temporal_aggregation(num_frames, golden["args"]["num_temporal_process_frames"])
    assert frame_padding(num_frames) == padding
    padded = num_frames + frame_padding(num_frames)
    assert padded == golden["vae_input"][0]["shape"][2]
    assert latent_frame_count(padded) == golden["latent_shape_BTCHW"][1] - 1


def test_frame_padding_reaches_the_next_8k_plus_1() -> None:
    assert [frame_padding(n) for n in (1, 2, 9, 14, 16, 17, 18)] == [0, 7, 0, 3, 1, 0, 7]


@pytest.mark.parametrize("bad", [0, 1, 8, 16, 18, 120])
def test_clip_frames_must_be_8k_plus_1(bad: int) -> None:
    with pytest.raises(UsageError, match="8k\\+1"):
        check_clip_frames(bad)


def test_split_needs_more_frames_than_one_clip() -> None:
    with pytest.raises(ValueError):
        plan_temporal(17, 17)


def _apply_merge(plan: TemporalPlan, latents: list[list[object]], order: list[int]) -> None:
    for i in order:
        copy = plan.merge[i]
        dst, src = latents[copy.dst_clip], latents[copy.src_clip]
        dst[copy.dst[0] : copy.dst[1]] = src[copy.src[0] : copy.src[1]]


def _reference_merge(plan: TemporalPlan, latents: list[list[object]]) -> None:
    """The reference's merge restated: clip by clip, in place, each shared latent from its owner."""
    owner = plan.owner_map()
    for clip in plan.clips:
        for latent_id in range(*clip.latent_ids):
            source = plan.clips[owner[latent_id]]
            if source.index != clip.index:
                value = latents[source.index][source.local_latent(latent_id)]
                latents[clip.index][clip.local_latent(latent_id)] = value


def _fresh_latents(plan: TemporalPlan) -> list[list[object]]:
    sizes = [c.latent_ids[1] - c.latent_ids[0] + 2 for c in plan.clips]
    return [[(c, j) for j in range(n)] for c, n in enumerate(sizes)]


clip_lengths = st.integers(1, 16).map(lambda k: 8 * k + 1)


@settings(max_examples=150, deadline=None)
@given(clip_frames=clip_lengths, extra=st.integers(1, 700))
def test_plan_properties(clip_frames: int, extra: int) -> None:
    num_frames = clip_frames + extra
    plan = plan_temporal(num_frames, clip_frames)
    clips = plan.clips
    # Clips tile the video with the fixed stride; only the last one is short, padded to 8k+1.
    assert clips[0].start == 0 and clips[-1].stop == num_frames
    for clip in clips:
        assert clip.start == clip.index * plan.frame_stride
        assert clip.padded_frames % 8 == 1 and clip.padded_frames <= clip_frames
        assert clip.padding == 0 or clip is clips[-1]
    # Every output frame comes from exactly one clip, in order, and none is lost.
    produced = [f for c in clips for f in range(c.start + c.keep[0], c.start + c.keep[1])]
    assert produced == list(range(num_frames))
    assert plan.output_frames == num_frames
    # Every shared latent id of every clip has exactly one owner, whose range contains it.
    owner = plan.owner_map()
    all_ids = {i for c in clips for i in range(*c.latent_ids)}
    assert set(owner) == all_ids
    assert all(clips[owner[i]].latent_ids[0] <= i < clips[owner[i]].latent_ids[1] for i in all_ids)
    # Owned ranges are consecutive blocks from id 1 to the end of the last clip.
    assert clips[0].owned_ids[0] == 1 and clips[-1].owned_ids[1] == clips[-1].latent_ids[1]
    assert all(a.owned_ids[1] == b.owned_ids[0] for a, b in zip(clips, clips[1:]))


@settings(max_examples=100, deadline=None)
@given(clip_frames=clip_lengths, extra=st.integers(1, 400), seed=st.randoms())
def test_merge_plan_equals_reference_merge_in_any_order(clip_frames: int, extra: int, seed) -> None:
    plan = plan_temporal(clip_frames + extra, clip_frames)
    expected = _fresh_latents(plan)
    _reference_merge(plan, expected)
    merged = _fresh_latents(plan)
    order = list(range(len(plan.merge)))
    seed.shuffle(order)
    _apply_merge(plan, merged, order)
    assert merged == expected
    # After merging, every clip holds its owner's value for every shared latent.
    owner = plan.owner_map()
    for clip in plan.clips:
        for latent_id in range(*clip.latent_ids):
            src = plan.clips[owner[latent_id]]
            assert merged[clip.index][clip.local_latent(latent_id)] == (src.index, src.local_latent(latent_id))


@settings(max_examples=100, deadline=None)
@given(clip_frames=clip_lengths, extra=st.integers(1, 400))
def test_frame_cut_vs_latent_ownership(clip_frames: int, extra: int) -> None:
    """Frame cuts sit on latent-ownership boundaries for even k (N = 8k+1), 2 frames later for odd k.

    Global latent id g covers frames 4g-3..4g. With odd k (e.g. the default 121)
    the first two frames of each boundary latent come from the previous clip's
    decode although the next clip owns that latent: a reference quirk.
    """
    plan = plan_temporal(clip_frames + extra, clip_frames)
    k = (clip_frames - 1) // 8
    for clip in plan.clips[1:]:
        first_owned_frame = 4 * clip.owned_ids[0] - 3
        assert clip.output_start == first_owned_frame + (0 if k % 2 == 0 else 2)
