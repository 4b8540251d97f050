"""CPU timing of the reference's "medium" configuration in our pipeline, normalised by a matmul probe.

Reproduces fixture README section 10 / `timing/medium_timing.json`:

* models: the h768 (default) or h384 transformer from the JSON's config with 8 layers, a 2-layer
  ControlNet (`VividVRControlNetModel.from_transformer_config(..., num_layers=2)`), the JSON's small
  VAE (slicing + tiling on), all random and built in memory with the fixture re-initialisation rule
  (all-zero tensors -> N(0, 0.02^2), all-one tensors -> 1 + 0.1 N(0, 1), AlphaBlender `mix_factor`
  -> N(0, 1); seeded); the tiny fixture text encoder, tokenizer and scheduler, loaded with
  `vividcli.models.loading`;
* input: 17 synthetic uint8 frames 256x256 (README section 4 formula, seed 4242); upscale 1.0,
  tile 128 (one spatial tile), 10 steps, CFG 6, seed 42, fp32, `torch.set_num_threads(2)`.

What is timed, all in one process, models already built:

* matmul probe: `torch.matmul` of two 2048x2048 fp32 matrices, 2 warm-up calls, then 6 figures of
  10 timed calls each (GFLOP/s = 2 * 2048^3 * 10 / seconds / 1e9), right before and right after the
  timed call -- exactly the JSON's `matmul_probe`;
* whole call: `list(restore_frames(...))`, i.e. VAE encode, prompt encoding, denoising, decode,
  resize and AdaIN colour fix (the reference's "whole call"; model building excluded);
* denoising loop: `vividcli.pipeline.sample_clips` is wrapped for the duration of the call and the
  loop is timed from its entry to its return (all 10 steps; its only extra work is
  `set_timesteps` and restoring the generator state, microseconds). Per-step times come from the
  `on_step` callback timestamps. This matches the reference's sum of wall time inside
  `pipe.denoise_process` (one call per step and tile, one tile here);
* process CPU seconds (`time.process_time`, all threads) for both;
* a per-module wall-time split from forward hooks, like the reference's `module_wall_s`
  (`--no-module-split` turns the hooks off);
* after all timing: the FLOPs of one denoising step counted with `torch.utils.flop_counter`
  (`--no-flops` skips it), giving the achieved GFLOP/s of the loop for us and for each reference
  run (same model; the reference's count also runs each control projector on both CFG halves).

Normalisation: a wall time multiplied by the matmul throughput measured around it is the work in
"matmul-equivalent GFLOP", which cancels most of the shared host's speed swings. Each reference run
is normalised with its own median probe figures before/after; ours the same way. The headline
figure uses the mean of the before and after medians.

    .venv/bin/python benchmarks/medium_timing.py [--config h768|h384] [--threads 2] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

import vividcli.pipeline as pipeline
from vividcli.config import RestoreOptions
from vividcli.media.reader import ArraySource
from vividcli.models.controlnet import VividVRControlNetModel
from vividcli.models.layout import CheckpointLayout
from vividcli.models.loading import VividVRModels, load_scheduler, load_text_encoder, load_tokenizer
from vividcli.models.offload import Placement
from vividcli.models.transformer import VividVRTransformer3DModel

REPO = Path(__file__).resolve().parents[1]
INPUT_SEED = 4242
NUM_FRAMES, HEIGHT, WIDTH = 17, 256, 256
MODEL_SEEDS = {"transformer": 101, "controlnet": 102, "vae": 103}
MATMUL_SIZE, MATMUL_CALLS, MATMUL_WARMUP, MATMUL_FIGURES = 2048, 10, 2, 6


# --------------------------------------------------------------------------- inputs and models


def reference_dir(explicit: str | None) -> Path:
    candidates = [Path(explicit)] if explicit else []
    if os.environ.get("VIVIDVR_REFERENCE"):
        candidates.append(Path(os.environ["VIVIDVR_REFERENCE"]))
    candidates.append(REPO.parent / "shared" / "fixtures" / "reference")
    for c in candidates:
        if (c / "ckpts").is_dir() and (c / "timing" / "medium_timing.json").is_file():
            return c
    sys.exit("reference fixtures not found: pass --reference DIR or set VIVIDVR_REFERENCE")


def synthetic_video(frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """Fixture README section 4: uint8 [F, H, W, 3]."""
    t = np.arange(frames, dtype=np.float64)[:, None, None, None]
    y = np.arange(height, dtype=np.float64)[None, :, None, None]
    x = np.arange(width, dtype=np.float64)[None, None, :, None]
    c = np.arange(3, dtype=np.float64)[None, None, None, :]
    cy = height * (0.3 + 0.4 * np.sin(0.2 * t + c))
    cx = width * (0.5 + 0.35 * np.cos(0.15 * t))
    v = (
        128
        + 55 * np.sin(2 * np.pi * (x / width * (1 + 0.5 * c) + 0.04 * t + 0.3 * c))
        + 35 * np.cos(2 * np.pi * (y / height * (1.5 - 0.3 * c) - 0.03 * t))
        + (60 - 40 * c) * np.exp(-(((y - cy) / (0.18 * height)) ** 2 + ((x - cx) / (0.18 * width)) ** 2))
    )
    v = v + np.random.default_rng(seed).normal(0.0, 8.0, size=(frames, height, width, 3))
    return np.clip(np.round(v), 0, 255).astype(np.uint8)


@torch.no_grad()
def reinitialise(module: torch.nn.Module, seed: int) -> None:
    """The fixture rule (README 3.1) on every parameter: zeros, ones and AlphaBlender mix factors re-drawn."""
    gen = torch.Generator().manual_seed(seed)
    for name, param in module.named_parameters():
        if name.endswith("mix_factor"):
            param.copy_(torch.randn(param.shape, generator=gen))
        elif torch.all(param == 0):
            param.copy_(0.02 * torch.randn(param.shape, generator=gen))
        elif torch.all(param == 1):
            param.copy_(1 + 0.1 * torch.randn(param.shape, generator=gen))


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_models(timing: dict, config_name: str, ckpts: Path, dtype: torch.dtype) -> VividVRModels:
    cfg = timing["configs"][config_name]
    torch.manual_seed(MODEL_SEEDS["transformer"])
    transformer = VividVRTransformer3DModel(**cfg["transformer"])
    reinitialise(transformer, MODEL_SEEDS["transformer"])
    torch.manual_seed(MODEL_SEEDS["controlnet"])
    controlnet = VividVRControlNetModel.from_transformer_config(transformer.config, num_layers=2)
    reinitialise(controlnet, MODEL_SEEDS["controlnet"])

    from diffusers import AutoencoderKLCogVideoX

    torch.manual_seed(MODEL_SEEDS["vae"])
    vae = AutoencoderKLCogVideoX(**timing["configs"]["shared"]["vae"])
    reinitialise(vae, MODEL_SEEDS["vae"])
    with torch.no_grad():  # the fixture also halves the decoder's conv_out (README 3.1)
        for p in vae.decoder.conv_out.parameters():
            p.mul_(0.5)
    vae.enable_slicing()
    vae.enable_tiling()

    expected = cfg["params"]
    got = {"transformer": count(transformer), "controlnet": count(controlnet)}
    if got != expected:
        print(f"WARNING: parameter counts {got} differ from the reference's {expected}", file=sys.stderr)

    layout = CheckpointLayout(ckpts)
    place = lambda m: m.to(dtype).eval().requires_grad_(False)  # noqa: E731
    transformer, controlnet = place(transformer), place(controlnet)
    return VividVRModels(
        transformer=transformer,
        controlnet=controlnet,
        vae=place(vae),
        text_encoder=load_text_encoder(layout, dtype, "cpu"),
        tokenizer=load_tokenizer(layout),
        scheduler=load_scheduler(layout),
        dtype=dtype,
        device=torch.device("cpu"),
        placement=Placement((transformer, controlnet), "cpu"),
    )


# --------------------------------------------------------------------------- measurements


def matmul_figures(figures: int = MATMUL_FIGURES) -> list[float]:
    """GFLOP/s of 2048x2048 fp32 matmuls: 2 warm-ups, then `figures` figures of 10 timed calls each."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE, generator=gen)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE, generator=gen)
    for _ in range(MATMUL_WARMUP):
        torch.matmul(a, b)
    out = []
    for _ in range(figures):
        start = time.perf_counter()
        for _ in range(MATMUL_CALLS):
            torch.matmul(a, b)
        seconds = time.perf_counter() - start
        out.append(round(2 * MATMUL_SIZE**3 * MATMUL_CALLS / seconds / 1e9, 1))
    return out


class ModuleTimer:
    """Summed wall time of chosen modules' forward calls (forward pre/post hooks)."""

    def __init__(self, groups: dict[str, list[torch.nn.Module]]):
        self.seconds = {name: 0.0 for name in groups}
        self.handles = []
        for name, modules in groups.items():
            for module in modules:
                self.handles.append(module.register_forward_pre_hook(self._pre(module)))
                self.handles.append(module.register_forward_hook(self._post(name, module)))
        self.starts: dict[int, list[float]] = {}

    def _pre(self, module):
        def hook(*_):
            self.starts.setdefault(id(module), []).append(time.perf_counter())

        return hook

    def _post(self, name, module):
        def hook(*_):
            self.seconds[name] += time.perf_counter() - self.starts[id(module)].pop()

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def module_groups(models: VividVRModels) -> dict[str, list[torch.nn.Module]]:
    t, c, v = models.transformer, models.controlnet, models.vae
    return {
        "text_encoder": [models.text_encoder],
        "vae.encoder": [v.encoder],
        "controlnet.control_feat_proj": [c.control_feat_proj],
        "controlnet.blocks": list(c.transformer_blocks),
        "controlnet_total": [c],
        "transformer.control_feat_proj": [t.control_feat_proj],
        "transformer.blocks": list(t.transformer_blocks),
        "transformer.connectors": list(t.connectors),
        "transformer_total": [t],
        "vae.decoder": [v.decoder],
    }


@contextmanager
def timed_sampler(record: dict):
    """Wrap `vividcli.pipeline.sample_clips` (the denoising loop) to time it from entry to return."""
    original = pipeline.sample_clips

    def wrapper(*args, **kwargs):
        record["loop_start"], record["loop_cpu_start"] = time.perf_counter(), time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            record["loop_end"], record["loop_cpu_end"] = time.perf_counter(), time.process_time()

    pipeline.sample_clips = wrapper
    try:
        yield
    finally:
        pipeline.sample_clips = original


def timed_restore(models: VividVRModels, video: np.ndarray, options: RestoreOptions, split: bool) -> dict:
    # float32 frames in [0, 1], as the reference's torch.from_numpy(u8).float().div(255.)
    source = ArraySource([frame.astype(np.float32) / np.float32(255.0) for frame in video])
    plan = pipeline.plan_restoration(source.num_frames, source.height, source.width, options)
    captions = [[f"a tile number {k}" for k in range(len(plan.tiles))] for _ in plan.clips]
    record: dict = {}
    step_ends: list[float] = []
    timer = ModuleTimer(module_groups(models)) if split else None
    try:
        with timed_sampler(record):
            wall0, cpu0 = time.perf_counter(), time.process_time()
            frames = list(pipeline.restore_frames(
                models, source, captions, options, on_step=lambda _state: step_ends.append(time.perf_counter())
            ))
            wall1, cpu1 = time.perf_counter(), time.process_time()
    finally:
        if timer is not None:
            timer.remove()
    out = np.stack(frames)
    marks = [record["loop_start"], *step_ends]
    return {
        "tiles": len(plan.tiles),
        "clips": len(plan.clips),
        "output_shape": list(out.shape),
        "output_finite": bool(np.isfinite(out).all()),
        "denoising_loop_wall_s": round(record["loop_end"] - record["loop_start"], 3),
        "denoising_loop_process_cpu_s": round(record["loop_cpu_end"] - record["loop_cpu_start"], 3),
        "whole_call_wall_s": round(wall1 - wall0, 3),
        "whole_call_process_cpu_s": round(cpu1 - cpu0, 3),
        "step_wall_s": [round(b - a, 3) for a, b in zip(marks, marks[1:])],
        "module_wall_s": {k: round(v, 2) for k, v in timer.seconds.items()} if timer else None,
    }


def reference_cfg_evaluation(models: VividVRModels, latents, control, embeds, negative, timestep) -> torch.Tensor:
    """The reference's CFG evaluation of a tile: control latents concatenated for both halves.

    Only for counting the reference's FLOPs (each control projector runs on batch 2); the models'
    full-batch path computes the same prediction as `predict_noise` up to rounding.
    """
    from vividcli.sampling.sampler import rotary_embedding

    cfg = models.transformer.config
    frames, _, height, width = latents.shape[1:]
    rope = rotary_embedding(frames, height, width, cfg.patch_size, cfg.patch_size_t, cfg.attention_head_dim)
    x, c, text = torch.cat([latents, latents]), torch.cat([control, control]), torch.cat([negative, embeds])
    t = timestep.expand(1)
    states = models.controlnet(x, text, c, t, image_rotary_emb=rope)
    model_input = torch.cat([x, c], dim=2)
    return models.transformer(model_input, text, t, control_hidden_states=states, image_rotary_emb=rope).sample


def count_step_flops(models: VividVRModels, options: RestoreOptions, latent_shape: tuple[int, ...]) -> dict:
    """FLOPs of one denoising step of one tile (ControlNet + transformer, CFG batch), by FlopCounterMode.

    Counted on random inputs of the run's tile shape, after the timed region, with attention on the
    math backend so that its matmuls are counted. Counts matmuls, convolutions and attention
    matmuls; softmax, norms and elementwise work are not counted. Ours (`predict_noise`: each control
    projector on batch 1) and the reference's (each projector on both identical CFG halves).
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from vividcli.sampling.sampler import SamplerSettings, predict_noise

    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(latent_shape, generator=gen)
    control = torch.randn(latent_shape, generator=gen)
    text_dim = models.transformer.config.text_embed_dim
    length = models.transformer.config.max_text_seq_length
    embeds, negative = torch.randn(2, 1, length, text_dim, generator=gen)
    settings = SamplerSettings(steps=options.steps, guidance=options.guidance, fidelity=options.fidelity)
    counter, reference = FlopCounterMode(display=False, depth=2), FlopCounterMode(display=False, depth=2)
    # The math SDPA backend decomposes attention into counted matmuls (the CPU fused kernel is not counted).
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        with counter:
            predict_noise(models.transformer, models.controlnet, latents, control, embeds, negative,
                          torch.tensor(999), settings)
        with reference:
            reference_cfg_evaluation(models, latents, control, embeds, negative, torch.tensor(999))
    by_module = counter.get_flop_counts()
    return {
        "per_step_gflop": round(counter.get_total_flops() / 1e9, 2),
        "reference_per_step_gflop": round(reference.get_total_flops() / 1e9, 2),
        "by_module_gflop": {
            name: round(sum(ops.values()) / 1e9, 2) for name, ops in by_module.items()
            if name != "Global" and name.count(".") <= 1
        },
        "note": "one CFG step of one tile (batch 2); matmul/conv/attention FLOPs only (torch FlopCounterMode); "
                "reference_per_step_gflop: the same step with both control projectors on batch 2, as the reference",
    }


# --------------------------------------------------------------------------- normalisation and report


def normalised(seconds: float, before: list[float], after: list[float]) -> dict:
    """Seconds x matmul GFLOP/s (matmul-equivalent GFLOP), with the before, after and mean medians."""
    mb, ma = statistics.median(before), statistics.median(after)
    return {
        "with_before_median": round(seconds * mb, 1),
        "with_after_median": round(seconds * ma, 1),
        "with_mean_of_medians": round(seconds * (mb + ma) / 2, 1),
    }


def summarise(seconds_loop: float, seconds_whole: float, before: list[float], after: list[float]) -> dict:
    return {
        "matmul_gflops_median_before": statistics.median(before),
        "matmul_gflops_median_after": statistics.median(after),
        "denoising_loop_wall_s": seconds_loop,
        "whole_call_wall_s": seconds_whole,
        "denoising_loop_matmul_gflop": normalised(seconds_loop, before, after),
        "whole_call_matmul_gflop": normalised(seconds_whole, before, after),
    }


def reference_runs(timing: dict, config_name: str) -> list[dict]:
    runs = []
    for run in timing["runs"]:
        if run["config"] != config_name:
            continue
        before, after = run["matmul_2048x2048_fp32_gflops_before"], run["matmul_2048x2048_fp32_gflops_after"]
        s = summarise(run["denoising_loop_wall_s"], run["whole_call_wall_s"], before, after)
        s["run"] = run["run"]
        s["denoising_loop_process_cpu_s"] = run["denoising_loop_process_cpu_s"]
        s["whole_call_process_cpu_s"] = run["whole_call_process_cpu_s"]
        runs.append(s)
    return runs


def ratios(ours: dict, refs: list[dict]) -> dict:
    """ours / reference for raw and normalised (mean-of-medians) figures, vs the best and the median run."""
    out = {}
    for key, norm_key in (("denoising_loop_wall_s", "denoising_loop_matmul_gflop"),
                          ("whole_call_wall_s", "whole_call_matmul_gflop")):
        raw = [r[key] for r in refs]
        norm = [r[norm_key]["with_mean_of_medians"] for r in refs]
        ours_norm = ours[norm_key]["with_mean_of_medians"]
        out[key] = {
            "vs_fastest_reference_run": round(ours[key] / min(raw), 3),
            "vs_median_reference_run": round(ours[key] / statistics.median(raw), 3),
        }
        out[norm_key] = {
            "vs_lowest_reference_run": round(ours_norm / min(norm), 3),
            "vs_median_reference_run": round(ours_norm / statistics.median(norm), 3),
        }
        cpu_key = key.replace("wall_s", "process_cpu_s")
        ref_cpu = [r[cpu_key] for r in refs if r[cpu_key] is not None]
        if ref_cpu:  # the reference recorded process CPU in one run per config only
            out[cpu_key] = {"vs_reference_run_with_cpu": round(ours[cpu_key] / ref_cpu[0], 3)}
    return out


def print_report(result: dict) -> None:
    ours, refs = result["ours"], result["reference_runs"]
    print()
    print(f"config {result['config']}, {result['torch_threads']} threads, torch {torch.__version__}")
    hdr = f"{'run':<22} {'mm before':>9} {'mm after':>9} {'loop s':>8} {'whole s':>8} {'loop GFLOPeq':>13} {'whole GFLOPeq':>14}"
    print(hdr)
    print("-" * len(hdr))
    for label, r in [("ours", ours), *((x["run"], x) for x in refs)]:
        print(
            f"{label:<22} {r['matmul_gflops_median_before']:>9.1f} {r['matmul_gflops_median_after']:>9.1f} "
            f"{r['denoising_loop_wall_s']:>8.2f} {r['whole_call_wall_s']:>8.2f} "
            f"{r['denoising_loop_matmul_gflop']['with_mean_of_medians']:>13.0f} "
            f"{r['whole_call_matmul_gflop']['with_mean_of_medians']:>14.0f}"
        )
    print("(GFLOPeq = seconds x mean of the before/after median matmul GFLOP/s)")
    print(f"ours: loop CPU {ours['denoising_loop_process_cpu_s']:.1f} s, whole CPU {ours['whole_call_process_cpu_s']:.1f} s")
    if "achieved_loop_gflops" in ours:
        rates = ", ".join(f"{r['run']} {r['achieved_loop_gflops']} ({r['loop_efficiency_vs_matmul']})" for r in refs)
        print(f"loop GFLOP/s achieved (counted FLOPs / loop s; share of the matmul probe): "
              f"ours {ours['achieved_loop_gflops']} ({ours['loop_efficiency_vs_matmul']}); {rates}")
    print(f"matmul figures before {ours['matmul_gflops_before']}, after {ours['matmul_gflops_after']}")
    for key, value in result["ratio_ours_over_reference"].items():
        print(f"ratio ours/reference {key}: {value}")
    if ours.get("module_wall_s"):
        print("module split (wall s):", ours["module_wall_s"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=("h768", "h384"), default="h768")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="denoising steps (10 to compare with the reference)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--reference", help="fixture folder (default: $VIVIDVR_REFERENCE or ../shared/fixtures/reference)")
    parser.add_argument("--no-module-split", action="store_true", help="no forward hooks (no per-module times)")
    parser.add_argument("--no-flops", action="store_true", help="skip counting the FLOPs of one step")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    ref = reference_dir(args.reference)
    timing = json.loads((ref / "timing" / "medium_timing.json").read_text())
    a = timing["args"]
    options = RestoreOptions(
        upscale=a["upscale"], tile_size=a["tile_size"], clip_frames=a["num_temporal_process_frames"],
        steps=args.steps, guidance=float(a["guidance_scale"]), dynamic_cfg=a["use_dynamic_cfg"], seed=a["seed"],
        restoration_guidance=a["restoration_guidance_scale"],
    )
    video = synthetic_video(NUM_FRAMES, HEIGHT, WIDTH, INPUT_SEED)

    build0 = time.perf_counter()
    models = build_models(timing, args.config, ref / "ckpts", torch.float32)
    build_s = time.perf_counter() - build0
    print(f"built {args.config} models in {build_s:.1f} s "
          f"(transformer {count(models.transformer):,} params, ControlNet {count(models.controlnet):,})", flush=True)

    before = matmul_figures()
    print(f"matmul before: {before}", flush=True)
    run = timed_restore(models, video, options, split=not args.no_module_split)
    after = matmul_figures()
    print(f"matmul after: {after}", flush=True)
    flops = None  # counted after the timed call and the probe, so the timed call runs cold like the reference's
    if not args.no_flops:
        plan = pipeline.plan_restoration(NUM_FRAMES, HEIGHT, WIDTH, options)
        latent_frames = (NUM_FRAMES - 1) // 4 + 1
        latent_frames += latent_frames % models.transformer.config.patch_size_t
        tile = plan.tiles[0]
        rows, cols = tile.slices
        shape = (1, latent_frames, 16, rows.stop - rows.start, cols.stop - cols.start)
        flops = count_step_flops(models, options, shape)
        flops["tile_latent_shape"] = list(shape)
        print(f"one denoising step of one tile: {flops['per_step_gflop']} GFLOP (counted)", flush=True)

    ours = summarise(run["denoising_loop_wall_s"], run["whole_call_wall_s"], before, after)
    ours.update(matmul_gflops_before=before, matmul_gflops_after=after, **{
        k: run[k] for k in ("denoising_loop_process_cpu_s", "whole_call_process_cpu_s", "step_wall_s",
                            "module_wall_s", "tiles", "clips", "output_shape", "output_finite")
    })
    refs = reference_runs(timing, args.config)
    if flops is not None:
        evaluations = args.steps * run["tiles"] * run["clips"]
        flops["loop_gflop"] = round(flops["per_step_gflop"] * evaluations, 1)
        flops["reference_loop_gflop"] = round(flops["reference_per_step_gflop"] * evaluations, 1)
        # Same model, but the reference runs each control projector twice: each run with its own count.
        for r, loop_gflop in ((ours, flops["loop_gflop"]), *((r, flops["reference_loop_gflop"]) for r in refs)):
            r["achieved_loop_gflops"] = round(loop_gflop / r["denoising_loop_wall_s"], 1)
            r["loop_efficiency_vs_matmul"] = round(loop_gflop / r["denoising_loop_matmul_gflop"]["with_mean_of_medians"], 3)
    result = {
        "what": "vividcli restore_frames on the reference's medium CPU timing configuration (benchmarks/medium_timing.py)",
        "config": args.config,
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "software": {"python": platform.python_version(), "torch": torch.__version__,
                     "diffusers": __import__("diffusers").__version__,
                     "transformers": __import__("transformers").__version__},
        "torch_threads": torch.get_num_threads(),
        "steps": args.steps,
        "model_build_s": round(build_s, 1),
        "params": {"transformer": count(models.transformer), "controlnet": count(models.controlnet),
                   "reference": timing["configs"][args.config]["params"]},
        "normalisation": "seconds x matmul GFLOP/s = matmul-equivalent GFLOP; 'with_mean_of_medians' uses the mean of "
                         "the before and after median probe figures (each run normalised with its own probe)",
        "loop_timing": "wall time from entry to return of vividcli.pipeline.sample_clips (wrapped), all steps",
        "flops": flops,
        "ours": ours,
        "reference_runs": refs,
        "ratio_ours_over_reference": ratios(ours, refs) if args.steps == a["num_inference_steps"] else None,
    }
    print_report(result) if result["ratio_ours_over_reference"] else print(json.dumps(ours, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
