"""The dry run on a simulated GPU (tiny configs, seconds): every offload mode runs the real pipeline on a fake
CUDA device without a device mismatch, every stage uses the device, and the planner agrees with it.

The full-size runs (tens of seconds to minutes each) are benchmarks/vram_dry_run.py; their figures are
in docs/benchmarks.md and benchmarks/results/vram_dry_run_*.json.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from vividcli.config import RestoreOptions
from vividcli.planning.cost import estimate, run_shape
from vividcli.planning.plan import plan_restoration
from vividcli.testing.dry_run import DryRunSpec, model_sizes, run_dry, tiny_configs

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "vram_dry_run.py"
TINY = dict(frames=9, height=32, width=48, upscale=1.0, tile_size=4, clip_frames=9, tiny=True)


@pytest.fixture(scope="module")
def tiny_sizes():
    return model_sizes(tiny_configs())


def planned(spec: DryRunSpec, sizes):
    options = RestoreOptions(upscale=spec.upscale, tile_size=spec.tile_size, clip_frames=spec.clip_frames,
                             sequential_cfg=spec.sequential_cfg, color_fix=spec.color_fix)
    shape = run_shape(plan_restoration(spec.frames, spec.height, spec.width, options), options)
    return estimate(shape, spec.offload, spec.weights, sizes, spec.ff_chunks)


@pytest.mark.parametrize(("offload", "weights", "sequential_cfg", "ff_chunks"), [
    ("none", "bf16", False, 1), ("model", "bf16", False, 1), ("group", "bf16", False, 1),
    ("sequential", "bf16", False, 1), ("group", "fp8", True, 1), ("model", "bf16", False, 4),
])
def test_tiny_dry_run_every_mode(tiny_sizes, offload, weights, sequential_cfg, ff_chunks) -> None:
    spec = DryRunSpec(offload=offload, weights=weights, sequential_cfg=sequential_cfg, ff_chunks=ff_chunks, **TINY)
    result = run_dry(spec)  # a tensor on the wrong device raises FakeTensorDeviceMismatchError here
    for stage in ("encode", "text", "denoise", "decode"):
        assert result["per_stage"][stage] > 0, stage
    assert (result["per_stage"]["load"] > 0) == (offload == "none")  # only none places the models at load
    cost = planned(spec, tiny_sizes)
    assert cost.peak_device_bytes == pytest.approx(result["peak_device_bytes"], rel=0.10)
    assert cost.peak_host_bytes == pytest.approx(result["peak_host_bytes"], rel=0.10)
    assert cost.device["denoise"] == pytest.approx(result["per_stage"]["denoise"], rel=0.10)


def test_offload_modes_order_on_the_simulated_device() -> None:
    """none keeps the denoising models on the device from load to decode; the other modes do not."""
    none = run_dry(DryRunSpec(offload="none", **TINY))["per_stage"]
    model = run_dry(DryRunSpec(offload="model", **TINY))["per_stage"]
    assert none["load"] > 0 and model["load"] == 0
    assert model["denoise"] == none["denoise"] and model["decode"] < none["decode"]


def test_script_prints_one_json_object_and_fails_in_one_line(tmp_path, capsys) -> None:
    spec = importlib.util.spec_from_file_location("vram_dry_run", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "dry.json"
    assert script.main(["--tiny", "--offload", "sequential", "--json", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    for key in ("peak_device_bytes", "peak_host_bytes", "per_stage"):
        assert key in printed
    assert script.main(["--tiny", "--frames", "0"]) == 1  # any failure: exit 1 with one line
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
