"""The run planner: cost model arithmetic checked by hand, `vividvr plan` through the CLI, no torch imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vividcli.cli import app
from vividcli.config import RestoreOptions
from vividcli.errors import UsageError
from vividcli.planning.cost import GIB, ModelSizes, choose_offload, estimate, run_shape, stage_flops
from vividcli.planning.memory import denoiser_weights
from vividcli.planning.plan import plan_restoration
from vividcli.testing.media import make_av_mp4

PAPER = RestoreOptions()  # 50 steps, CFG 6, tile 128, 121-frame clips, short side to 1024


def paper_shape(frames: int = 121, height: int = 1024, width: int = 1820, **options):
    opts = RestoreOptions(**options)
    return run_shape(plan_restoration(frames, height, width, opts), opts)


def test_model_calls_are_clips_times_tiles_times_steps_times_cfg() -> None:
    shape = paper_shape()  # 1024x1820: 128 x 227 latents -> 3 tiles of 128 across; one clip
    assert (shape.clips, shape.tiles, shape.steps, shape.cfg) == (1, 3, 50, 2)
    assert shape.tile_calls == 150 and shape.model_calls == 300
    long = paper_shape(frames=241)  # clips of 121 frames overlapping by 61: 3 clips
    assert long.clips == 3 and long.model_calls == 3 * 3 * 50 * 2
    assert paper_shape(guidance=1.0).model_calls == 150  # no CFG: one sample per call


def test_dit_flops_of_one_1024_square_121_frame_forward() -> None:
    """../shared/docs/performance.md: 65,536 video tokens; DiT 2.86e15, connectors 2.29e15, ControlNet 0.41e15."""
    shape = paper_shape(height=1024, width=1024, steps=1, guidance=1.0)  # one tile, one call of one sample
    assert shape.tiles == 1 and shape.latent_frames == 32 and shape.video_tokens(ModelSizes()) == 65_536
    flops = stage_flops(shape, ModelSizes())
    assert flops["denoise.dit"] / 1e15 == pytest.approx(2.86, abs=0.005)
    assert flops["denoise.connectors"] / 1e15 == pytest.approx(2.29, abs=0.005)
    assert flops["denoise.controlnet"] / 1e15 == pytest.approx(0.41, abs=0.005)
    # one Vivid-VR forward 5.55e15 (both projectors ~0.2 % on top)
    assert flops["denoise"] / 1e15 == pytest.approx(5.57, abs=0.01)


def test_flops_scale_with_calls_and_cfg() -> None:
    one = stage_flops(paper_shape(steps=1), ModelSizes())
    fifty = stage_flops(paper_shape(), ModelSizes())
    assert fifty["denoise"] == 50 * one["denoise"]
    sequential = stage_flops(paper_shape(steps=1, sequential_cfg=True), ModelSizes())
    # the same model FLOPs; the control projectors run once per half instead of once per batched call
    assert sequential["denoise.dit"] == one["denoise.dit"]
    assert sequential["denoise.projectors"] == 2 * one["denoise.projectors"]
    assert one["text"] > 0 and one["encode"] > 0 and one["decode"] > one["encode"]


def test_weights_on_the_device_per_mode() -> None:
    shape, sizes = paper_shape(), ModelSizes()
    bf16 = (6_117_534_899 + 825_767_475) * 2  # transformer with connectors + ControlNet, 2 bytes each
    assert denoiser_weights(sizes, "bf16", 2) == bf16 == estimate(shape, "none").device["load"]
    fp8 = denoiser_weights(sizes, "fp8", 2)  # 5.97e9 parameters stored in one byte
    assert fp8 == bf16 - (5_288_422_400 + 681_479_168)
    for mode in ("model", "group", "sequential"):
        assert estimate(shape, mode).device["load"] == 0
    none, model = estimate(shape, "none"), estimate(shape, "model")
    assert model.device["denoise"] == none.device["denoise"]  # both models are on the device to denoise
    assert model.device["text"] == none.device["text"] - bf16  # but not beside T5
    assert estimate(shape, "group").device["denoise"] < model.device["denoise"] - 11 * GIB


def test_activation_terms_halve_with_sequential_cfg() -> None:
    batched, halves = estimate(paper_shape(), "model"), estimate(paper_shape(sequential_cfg=True), "model")
    for term in ("controlnet_states", "text_video_tensors", "video_tensors", "rotary_fp32"):
        assert halves.terms[term] * 2 == batched.terms[term]
    # B x N x d x 2 bytes: the six ControlNet states of 2 x 65,536 x 3072 bf16 values
    assert batched.terms["controlnet_states"] == 6 * 2 * 65_536 * 3072 * 2


def test_device_memory_is_flat_in_video_length() -> None:
    short, long = estimate(paper_shape(121), "model"), estimate(paper_shape(1210), "model")
    assert long.shape.clips == 20 and long.peak_device_bytes == short.peak_device_bytes
    assert long.host["denoise"] > short.host["denoise"]  # every clip's state waits on the host


def test_auto_picks_the_fastest_mode_that_fits() -> None:
    shape = paper_shape()
    assert choose_offload(shape, None).offload == "none"
    assert choose_offload(shape, 1000 * GIB).offload == "none"
    peaks = {mode: estimate(shape, mode).peak_device_bytes for mode in ("none", "model", "group", "sequential")}
    smallest = min(peaks.values())
    chosen = choose_offload(shape, smallest)
    assert chosen.peak_device_bytes == smallest and chosen.offload in ("group", "sequential")
    with pytest.raises(UsageError, match=f"needs {smallest / GIB:.1f} GiB"):
        choose_offload(shape, smallest - 1)


def test_defaults_are_the_official_model_sizes() -> None:
    """ModelSizes() equals what the models built from the official configs count (meta device)."""
    from vividcli.testing.dry_run import full_configs, model_sizes

    counted = model_sizes(full_configs())
    defaults = ModelSizes()
    for name in ("vae_encode_flops_per_voxel", "vae_decode_flops_per_voxel"):
        assert getattr(defaults, name) == pytest.approx(getattr(counted, name), rel=0.01)
    exact = {k: v for k, v in vars(defaults).items() if "flops" not in k}
    assert exact == {k: v for k, v in vars(counted).items() if "flops" not in k}


# ------------------------------------------------------------------------------------------------ CLI


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return make_av_mp4(tmp_path_factory.mktemp("plan") / "in.mp4", num_frames=12)  # 48x64 -> 1024x1365


def plan_json(*args: str) -> tuple[int, dict | None, str]:
    result = CliRunner().invoke(app, ["plan", *args, "--json"])
    data = json.loads(result.stdout) if result.exit_code == 0 else None
    return result.exit_code, data, result.stderr


def test_plan_json_shape(video) -> None:
    code, data, _ = plan_json(str(video), "--max-vram", "1000")
    assert code == 0
    for key in ("offload", "weights", "frames", "output_size", "tiles", "clips", "model_calls", "flops",
                "peak_device_bytes", "peak_host_bytes", "per_stage", "per_stage_host"):
        assert key in data, key
    assert data["frames"] == 12 and data["output_size"] == [1024, 1365] and data["clips"] == 1
    assert data["model_calls"] == data["clips"] * data["tiles"] * 50 * 2
    assert data["offload"] == "none" and data["weights"] == "bf16"  # a huge budget: the fastest mode
    assert data["peak_device_bytes"] == max(data["per_stage"].values())
    assert data["flops"]["total"] == sum(data["flops"][s] for s in ("encode", "text", "denoise", "decode"))


def test_plan_picks_smaller_modes_for_smaller_budgets(video) -> None:
    _, data, _ = plan_json(str(video), "--max-vram", "1000")
    by_mode = data["peak_device_bytes_by_mode"]
    budget = min(by_mode.values()) / GIB + 0.01
    code, small, _ = plan_json(str(video), "--device", "cuda", "--max-vram", f"{budget:.2f}")
    assert code == 0 and small["offload"] in ("group", "sequential")
    assert small["peak_device_bytes"] == min(by_mode.values())
    code, fp8, _ = plan_json(str(video), "--weights", "fp8", "--offload", "model", "--max-vram", "1000")
    assert code == 0 and fp8["peak_device_bytes"] < by_mode["model"]


def test_plan_refuses_in_one_line_naming_the_smallest_budget(video) -> None:
    code, _, stderr = plan_json(str(video), "--max-vram", "1")
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert "nothing fits 1.0 GiB" in stderr and "--offload" in stderr and "GiB" in stderr.split("needs")[1]
    code, _, stderr = plan_json(str(video), "--offload", "none", "--max-vram", "8")
    assert code == 2 and "--offload none needs" in stderr


def test_plan_table(video) -> None:
    result = CliRunner().invoke(app, ["plan", str(video), "--device", "cuda", "--max-vram", "24"])
    assert result.exit_code == 0, result.output
    assert "model calls" in result.stdout and "denoise" in result.stdout and "GiB" in result.stdout


PROBE = """
import json, sys
from typer.testing import CliRunner
from vividcli.cli import app
result = CliRunner().invoke(app, sys.argv[1:])
print(json.dumps({"code": result.exit_code, "torch": "torch" in sys.modules}))
"""


def test_plan_imports_no_torch(video) -> None:
    """Planning for another machine (--device cuda --max-vram 24) from this one loads neither torch nor weights."""
    args = ["plan", str(video), "--device", "cuda", "--max-vram", "24", "--json"]
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=300)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"code": 0, "torch": False}


def test_restore_dry_run_plans_each_input_and_writes_nothing(video, tmp_path) -> None:
    out = tmp_path / "out.mp4"
    args = ["restore", str(video), "-o", str(out), "--dry-run", "--device", "cuda", "--offload", "group", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    plans = json.loads(result.stdout)["plans"]
    assert len(plans) == 1 and plans[0]["offload"] == "group" and plans[0]["frames"] == 12
    _, direct, _ = plan_json(str(video), "--device", "cuda", "--offload", "group")
    assert plans[0]["per_stage"] == direct["per_stage"]  # the same plan as `vividvr plan`
    assert not out.exists()
    refused = CliRunner().invoke(app, ["restore", str(video), "-o", str(out), "--dry-run", "--engine", "classic"])
    assert refused.exit_code == 2 and "--dry-run plans the vivid engine" in refused.stderr


def test_plan_ff_chunks_and_auto_adding_them(video) -> None:
    code, stock, _ = plan_json(str(video), "--offload", "model", "--max-vram", "1000")
    code, chunked, _ = plan_json(str(video), "--offload", "model", "--ff-chunks", "8", "--max-vram", "1000")
    assert code == 0 and chunked["ff_chunks"] == 8 and stock["ff_chunks"] == 1
    assert chunked["per_stage"]["denoise"] < stock["per_stage"]["denoise"]
    assert "rotary_fp32" in stock["terms"] and "rotary_fp32" not in chunked["terms"]
    # a budget just below --offload model: auto keeps the mode and adds token chunking (before sequential CFG)
    budget = (stock["peak_device_bytes"] - 2**20) / GIB
    code, auto, _ = plan_json(str(video), "--device", "cuda", "--max-vram", f"{budget:.6f}")
    assert code == 0 and (auto["offload"], auto["ff_chunks"], auto["sequential_cfg"]) == ("model", 8, False)
    code, _, stderr = plan_json(str(video), "--ff-chunks", "-1")
    assert code == 2 and "--ff-chunks" in stderr
