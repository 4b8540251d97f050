"""RestoreOptions: the one place restoration options are validated (the CLI and the Python API)."""

from __future__ import annotations

import pytest

from vividcli.config import RestoreOptions
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
