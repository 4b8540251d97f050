"""Size rules and resizes against the reference goldens."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from vividcli.errors import UsageError
from vividcli.planning.clips import frame_padding
from vividcli.planning.geometry import (
    gen_length,
    latent_padding_frames,
    latent_shape,
    plan_geometry,
    scaled_size,
    upscale_factor,
    vae_length,
)
from vividcli.stages.resize import caption_video, resize_decoded, upscale_video, vae_input

CASES = [
    "case_c_whole_video",
    "case_d_temporal_aggregation",
    "case_f_whole_video_frame_padding",
    "case_g_temporal_aggregation_padding",
]


def _golden(reference_dir: Path, case: str) -> dict:
    return json.loads((reference_dir / "golden" / f"{case}.json").read_text())


def _load_input(reference_dir: Path, name: str) -> torch.Tensor:
    # README section 4: u8 [F, H, W, C] -> float [F, C, H, W] in [0, 1].
    frames = np.load(reference_dir / "inputs" / name)
    return torch.from_numpy(frames).float().div(255.0).clip(0, 1).permute(0, 3, 1, 2).contiguous()


@pytest.mark.parametrize("case", CASES)
def test_sizes_match_golden(reference_dir: Path, case: str) -> None:
    golden = _golden(reference_dir, case)
    frames, height, width, _ = golden["input_shape_uint8_FHWC"]
    args = golden["args"]
    geometry = plan_geometry(height, width, args["upscale"], args["tile_size"])
    info = golden["info_after_upscale"]
    assert geometry.input_size == (height, width)
    assert geometry.upscaled_size == (info["height"], info["width"])
    assert list(geometry.gen_size) == golden["gen_height_width"]
    assert list(geometry.vae_size) == golden["vae_input"][0]["shape"][-2:]
    assert list(geometry.latent_size) == golden["latent_shape_BTCHW"][-2:]
    clip_frames = min(frames, args["num_temporal_process_frames"])
    assert list(latent_shape(clip_frames + frame_padding(clip_frames), geometry)) == golden["latent_shape_BTCHW"]


def test_case_c_tensors_bit_exact(reference_dir: Path) -> None:
    golden = _golden(reference_dir, "case_c_whole_video")
    tensors = load_file(reference_dir / "golden" / "case_c_whole_video.safetensors")
    video = _load_input(reference_dir, golden["input_file"])
    geometry = plan_geometry(40, 66, 1.6, 6)
    assert geometry.scale_factor == 1.6 and geometry.resizes_input
    upscaled = upscale_video(video, geometry.scale_factor)
    assert tuple(upscaled.shape[-2:]) == geometry.upscaled_size == (64, 105)
    assert torch.equal(upscaled[0], tensors["control_video_after_upscale_frame0"])
    encoded = vae_input(upscaled, geometry.gen_size)
    assert list(encoded.shape) == golden["vae_input"][0]["shape"] == [1, 3, 17, 64, 104]
    assert torch.equal(encoded[0, :, 0], tensors["vae_input_frame0"])
    assert encoded.double().sum().item() == pytest.approx(golden["vae_input"][0]["sum"], rel=1e-9)


@pytest.mark.parametrize("case", ["case_d_temporal_aggregation", "case_f_whole_video_frame_padding"])
def test_upscale_one_is_no_resize(reference_dir: Path, case: str) -> None:
    golden = _golden(reference_dir, case)
    tensors = load_file(reference_dir / "golden" / f"{case}.safetensors")
    video = _load_input(reference_dir, golden["input_file"])
    geometry = plan_geometry(32, 48, 1.0, 4)
    assert not geometry.resizes_input
    assert torch.equal(upscale_video(video, geometry.scale_factor)[0], tensors["control_video_after_upscale_frame0"])
    # 32x48 is already a multiple of 8: the VideoProcessor only normalises.
    encoded = vae_input(video[:17], geometry.gen_size)
    assert torch.equal(encoded[0].permute(1, 0, 2, 3), video[:17] * 2 - 1)


def test_vae_input_is_nearest_resize_to_multiple_of_8() -> None:
    video = torch.rand(3, 3, 21, 35)
    encoded = vae_input(video, (21, 35))
    assert encoded.shape == (1, 3, 3, 16, 32)
    expected = 2 * F.interpolate(video, size=(16, 32), mode="nearest") - 1
    assert torch.equal(encoded[0].permute(1, 0, 2, 3), expected)
    # Gen size rounded *up* (input smaller than one tile) makes the VideoProcessor upsample.
    grown = vae_input(video, (24, 40))
    assert grown.shape == (1, 3, 3, 24, 40)


@pytest.mark.parametrize(
    "size, tile, gen, vae",
    [
        (48, 128, 48, 48),  # multiple of 16 below one tile: unchanged
        (41, 128, 48, 48),  # below one tile: rounded up
        (40, 128, 48, 48),  # 5 latents cannot be patchified in pairs (the reference crashes): 6
        (854, 128, 864, 864),  # 480p at --upscale 1: 107 latents would crash, 108
        (1023, 128, 1024, 1024),
        (1024, 128, 1024, 1024),  # not below one tile: left as is
        (1030, 128, 1030, 1024),  # left as is, VAE floors to 1024
        (105, 6, 105, 104),  # golden case c width
        (37, 6, 48, 48),
        (25, 6, 32, 32),
        (47, 6, 48, 48),
        (49, 6, 49, 48),
    ],
)
def test_gen_and_vae_lengths(size: int, tile: int, gen: int, vae: int) -> None:
    assert gen_length(size, tile) == gen
    assert vae_length(gen) == vae


def test_upscale_zero_short_side_to_1024() -> None:
    geometry = plan_geometry(480, 854, 0, 128)
    assert geometry.scale_factor == 1024 / 480
    assert geometry.upscaled_size == (1024, 1821)
    assert geometry.gen_size == (1024, 1821) and geometry.vae_size == (1024, 1816)
    assert geometry.latent_size == (128, 227)


def test_upscale_zero_float_rounding_gives_1023() -> None:
    # 1024/49*49 is just below 1024 in float64, and torch floors it the same way.
    geometry = plan_geometry(49, 50, 0, 128)
    assert geometry.upscaled_size[0] == 1023
    out = F.interpolate(torch.zeros(1, 1, 49, 50), scale_factor=geometry.scale_factor, mode="bicubic")
    assert tuple(out.shape[-2:]) == geometry.upscaled_size
    assert geometry.gen_size[0] == 1024  # 1023 < 1024 px tile, rounded back up


@settings(max_examples=60, deadline=None)
@given(height=st.integers(1, 40), width=st.integers(1, 40), factor=st.floats(0.3, 4.0))
def test_scaled_size_matches_torch(height: int, width: int, factor: float) -> None:
    expected = (scaled_size(height, factor), scaled_size(width, factor))
    if min(expected) < 1:
        return
    out = upscale_video(torch.rand(1, 1, height, width), factor)
    assert tuple(out.shape[-2:]) == expected
    assert 0 <= out.min() and out.max() <= 1


def test_invalid_upscale() -> None:
    with pytest.raises(UsageError, match="upscale"):
        upscale_factor(10, 10, -1.0)
    with pytest.raises(UsageError, match="nothing"):
        plan_geometry(4, 4, 0.1, 4)


def test_latent_padding() -> None:
    assert latent_padding_frames(5) == 1
    assert latent_padding_frames(6) == 0
    with pytest.raises(ValueError):
        latent_padding_frames(5, patch_size_t=3)
    geometry = plan_geometry(32, 48, 1.0, 4)
    assert latent_shape(14 + frame_padding(14), geometry) == (1, 6, 16, 4, 6)
    assert latent_shape(33, geometry) == (1, 10, 16, 4, 6)


def test_caption_and_output_resizes() -> None:
    video = torch.rand(2, 3, 64, 105)
    assert caption_video(video, (64, 105)).shape == (2, 3, 64, 105)
    assert caption_video(video[..., :40, :66], (40, 72)).shape == (2, 3, 40, 72)
    assert resize_decoded(torch.rand(2, 3, 64, 104), (64, 105)).shape == (2, 3, 64, 105)


@settings(max_examples=200, deadline=None)
@given(height=st.integers(8, 1100), width=st.integers(8, 1100), tile=st.sampled_from([4, 8, 64, 128]))
def test_every_size_gives_patchable_tiles(height: int, width: int, tile: int) -> None:
    """No input size is refused at --upscale 1: every latent tile has even sides."""
    from vividcli.planning.tiles import check_tiles_patchable, plan_tiles

    geometry = plan_geometry(height, width, 1.0, tile)
    check_tiles_patchable(plan_tiles(*geometry.latent_size, tile, tile // 2))
