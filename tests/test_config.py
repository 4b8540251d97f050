"""RestoreOptions: the one place restoration options are validated (the CLI and the Python API)."""

from __future__ import annotations

import re

import pytest

from vividcli.config import MAX_STEPS, MAX_TILE_SIZE, SEED_RANGE, RestoreOptions
from vividcli.errors import UsageError


def test_defaults_are_the_papers():
    o = RestoreOptions()
    assert (o.upscale, o.tile_size, o.clip_frames, o.steps, o.guidance, o.seed) == (0.0, 128, 121, 50, 6.0, 42)
    assert (o.restoration_guidance, o.fidelity, o.color_fix, o.dynamic_cfg) == (-1.0, 1.0, "adain", False)


@pytest.mark.parametrize("change, needle", [
    ({"upscale": -1}, "--upscale"),
    ({"upscale": float("inf")}, "--upscale must be a finite number"),
    ({"guidance": float("nan")}, "--guidance must be a finite number"),
    ({"fidelity": -0.1}, "--fidelity"),
    ({"restoration_guidance": float("nan")}, "--restoration-guidance"),
    ({"tile_size": 5}, "--tile-size"),
    ({"tile_size": 4.0}, "--tile-size must be a whole number"),
    ({"clip_frames": 20}, "8k+1"),
    ({"steps": 0}, "--steps"),
    ({"steps": "3"}, "--steps must be a whole number"),
    ({"color_fix": "wavelet"}, "--color-fix"),
])
def test_bad_values_are_one_usage_error(change, needle):
    with pytest.raises(UsageError, match=needle.replace("+", r"\+")) as info:
        RestoreOptions(**change)
    assert info.value.exit_code == 2 and "\n" not in str(info.value)


@pytest.mark.parametrize("change, needle", [
    ({"tile_size": MAX_TILE_SIZE + 2}, "--tile-size must be at most 300 latent pixels (2400 px"),
    ({"steps": MAX_STEPS + 1}, "--steps must be between 1 and 1000"),
    ({"seed": SEED_RANGE[1] + 1}, "--seed must fit in 64 bits"),
    ({"seed": SEED_RANGE[0] - 1}, "--seed must fit in 64 bits"),
])
def test_limits_that_would_fail_after_loading_are_usage_errors(change, needle):
    with pytest.raises(UsageError, match=re.escape(needle)) as info:
        RestoreOptions(**change)
    assert info.value.exit_code == 2 and "\n" not in str(info.value)


def test_the_limits_themselves_are_accepted():
    RestoreOptions(tile_size=MAX_TILE_SIZE, steps=MAX_STEPS, seed=SEED_RANGE[0])
    RestoreOptions(seed=SEED_RANGE[1])


def test_the_limits_are_those_of_the_code_that_would_fail():
    """RoPE tables, scheduler and generator accept exactly up to the limits RestoreOptions checks."""
    import torch
    from diffusers import CogVideoXDPMScheduler

    from vividcli.sampling.sampler import rotary_embedding

    rotary_embedding(2, MAX_TILE_SIZE, MAX_TILE_SIZE, 2, 2, 64)
    with pytest.raises(RuntimeError):
        rotary_embedding(2, MAX_TILE_SIZE + 2, 8, 2, 2, 64)
    CogVideoXDPMScheduler().set_timesteps(MAX_STEPS)
    with pytest.raises(ValueError):
        CogVideoXDPMScheduler().set_timesteps(MAX_STEPS + 1)
    for seed in SEED_RANGE:
        torch.Generator().manual_seed(seed)
    with pytest.raises((ValueError, RuntimeError, OverflowError)):
        torch.Generator().manual_seed(SEED_RANGE[1] + 1)
