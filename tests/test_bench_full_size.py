"""benchmarks/full_size_gpu.py: its --tiny mode (same code path as the GPU run), geometry and FLOP model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "full_size_gpu.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("full_size_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_mode_writes_the_report(bench, tmp_path):
    out = tmp_path / "full_size.json"
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--tiny", "--steps", "1", "--warmup", "1", "--peak-tflops", "2.0", "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["device_name"] and report["config"] == "tiny"
    assert report["latent_shape"] == [1, 4, 16, 4, 4] and report["video_tokens"] == 8
    assert len(report["step_seconds"]) == 2 and report["seconds_per_step"] == report["step_seconds"][1] > 0
    assert report["peak_gpu_memory_bytes"] is None and report["peak_gpu_memory_gib"] is None
    assert report["model_flops_per_step"] == sum(report["model_flops_parts"].values())
    expected_tflops = report["model_flops_per_step"] / report["seconds_per_step"] / 1e12
    assert report["achieved_tflops"] == pytest.approx(expected_tflops, rel=1e-2, abs=1e-4)
    assert report["peak_tflops"] == 2.0
    assert report["mfu"] == pytest.approx(report["achieved_tflops"] / 2.0, rel=1e-2, abs=1e-4)
    assert report["output_finite"] is True


def test_full_size_geometry_and_flops_match_the_performance_notes(bench):
    tiles, shape = bench.plan(49, 1024, 1024, 128)
    assert len(tiles) == 1 and shape == (1, 14, 16, 128, 128)  # 13 latents + 1 padding latent
    tokens = 7 * 64 * 64
    flops = bench.flop_model(tokens, 226, 3072, 42, 6, 14 * 128 * 128, cfg_batch=2)
    # docs/benchmarks.md, 1024x1024x49: DiT 0.71 PF, connectors 0.45, ControlNet 0.10 per forward; 2.53 PF per step.
    parts = {k: v / 2 / 1e15 for k, v in flops["parts"].items()}
    assert parts["dit"] == pytest.approx(0.71, abs=0.005) and parts["connectors"] == pytest.approx(0.45, abs=0.005)
    assert parts["controlnet"] == pytest.approx(0.10, abs=0.005)
    assert flops["per_step"] / 1e15 == pytest.approx(2.53, abs=0.01)
    assert bench.projector_flops_per_position() == pytest.approx(8.2e6, rel=1e-3)


def test_flop_model_agrees_with_the_flop_counter(bench):
    """The analytic model against torch's count of one CFG step of the tiny models (within 2 %)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from vividcli.sampling.sampler import SamplerSettings, predict_noise

    transformer, controlnet = bench.build_models(bench.TINY_CONFIG, 1, torch.device("cpu"), torch.float32)
    _, state, cond, _ = bench.inputs(transformer, 9, 32, 32, 4, "cpu", torch.float32)
    latents = state.clips[0].latents
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        predict_noise(transformer, controlnet, latents, cond.control_latents, cond.prompt_embeds,
                      cond.negative_prompt_embeds, torch.tensor(999), SamplerSettings())
    _, frames, _, h, w = latents.shape
    model = bench.flop_model(frames // 2 * (h // 2) * (w // 2), 226, 96, 2, 1, frames * h * w, cfg_batch=2)
    assert model["per_step"] == pytest.approx(counter.get_total_flops(), rel=0.02)


def test_peak_lookup(bench):
    assert bench.peak_tflops("NVIDIA H200", None) == 989.4
    assert bench.peak_tflops("NVIDIA H100 PCIe", None) == 756.0
    assert bench.peak_tflops("NVIDIA H20", None) == 148.0
    assert bench.peak_tflops("some CPU", None) is None and bench.peak_tflops("some CPU", 3.0) == 3.0
