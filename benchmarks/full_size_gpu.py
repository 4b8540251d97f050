"""Full-size Vivid-VR denoising on one GPU: seconds per step, peak memory, model-FLOP utilisation.

Builds the CogVideoX1.5-5B-shaped Vivid-VR transformer (42 layers, 48 x 64 heads, text_embed_dim
4096, time_embed_dim 512, patch 2 x 2 x 2; the official config.json values) and the 6-block
ControlNet with random weights, directly on the device, in bf16. Then it runs a few denoising
steps of one clip through the project's own loop (`vividcli.sampling.sampler.sample_clips`: CFG 6,
batch 2, solver step, tile blending), at 1024x1024, 49 frames (13 latents + 1 padding latent), one
spatial tile of 128 latent px, and prints one JSON object: seconds per step (the first `--warmup`
steps excluded), peak GPU memory (`torch.cuda.max_memory_allocated`), and model-FLOP utilisation
against the FLOP model of ../shared/docs/performance.md (see `flop_model`).

No VAE, no T5: the control latents, initial noise and prompt embeddings are random tensors of the
right shapes (the loop's cost does not depend on their values).

    .venv/bin/python benchmarks/full_size_gpu.py [--steps 3] [--warmup 1] [--json PATH]
    .venv/bin/python benchmarks/full_size_gpu.py --tiny   # the same code path on CPU, tiny config
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from diffusers import CogVideoXDPMScheduler

from vividcli.models.controlnet import VividVRControlNetModel
from vividcli.models.projector import PROJECTOR_WIDTH
from vividcli.models.transformer import VividVRTransformer3DModel
from vividcli.planning.clips import frame_padding
from vividcli.planning.geometry import latent_shape, plan_geometry
from vividcli.planning.tiles import plan_tiles
from vividcli.sampling.sampler import ClipConditioning, ClipState, DenoiseState, SamplerSettings, sample_clips
from vividcli.sampling.scheduler import GuidedDPMSolver
from vividcli.testing.configs import COGVIDEOX_TRANSFORMER, SCHEDULER_CONFIG, cogvideox_transformer_config, model_kwargs

FULL_CONFIG = model_kwargs(COGVIDEOX_TRANSFORMER)
# Same code path, seconds on CPU: hidden 96 (divisible by the connectors' 48 heads), 2 layers.
TINY_CONFIG = model_kwargs(cogvideox_transformer_config(num_attention_heads=3, attention_head_dim=32, text_embed_dim=32,
                                                       time_embed_dim=32, num_layers=2))
# Dense bf16 tensor-core peaks (vendor data sheets, TFLOP/s); longest matching name first.
PEAK_BF16_TFLOPS = {"H100 PCIe": 756.0, "H200": 989.4, "H100": 989.4, "H20": 148.0, "A100": 312.0, "L40S": 362.0}
CONNECTOR_MLP_WIDTH = 512


def projector_flops_per_position(channels: int = 16, width: int = PROJECTOR_WIDTH) -> int:
    """FLOPs of one control feature projector per latent position (3x3 and 3x1x1 convs, shortcuts)."""

    def block(cin: int, cout: int) -> int:
        spatial = 2 * 9 * (cin * cout + cout * cout) + (2 * cin * cout if cin != cout else 0)
        return spatial + 2 * 2 * 3 * cout * cout  # temporal block: two 3x1x1 convs

    return block(channels, width) + block(width, width) + block(width, channels)


def flop_model(video_tokens: int, text_tokens: int, hidden: int, layers: int, controlnet_layers: int,
               latent_positions: int, cfg_batch: int) -> dict:
    """FLOPs of one denoising step (performance.md): DiT block 24*L*d^2 + 4*L^2*d with L = text + video
    tokens; a connector 4*N^2*d (cross-attention) + four d->512->d MLPs; the ControlNet as its blocks;
    both control projectors once per step (they run on batch 1, shared by the CFG batch)."""
    n, d, length = video_tokens, hidden, text_tokens + video_tokens
    block = 24 * length * d * d + 4 * length * length * d
    connector = 4 * n * n * d + 4 * (2 * n * 2 * d * CONNECTOR_MLP_WIDTH)
    parts = {
        "dit": cfg_batch * layers * block,
        "connectors": cfg_batch * layers * connector,
        "controlnet": cfg_batch * controlnet_layers * block,
        "projectors": 2 * projector_flops_per_position() * latent_positions,
    }
    return {"per_step": sum(parts.values()), "parts": parts}


def build_models(config: dict, controlnet_layers: int, device: torch.device, dtype: torch.dtype):
    """Random-weight transformer and ControlNet, initialised on `device` in `dtype` (no slow CPU init)."""
    torch.manual_seed(0)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            transformer = VividVRTransformer3DModel(**config)
            controlnet = VividVRControlNetModel.from_transformer_config(transformer.config, controlnet_layers)
    finally:
        torch.set_default_dtype(default_dtype)
    return [m.eval().requires_grad_(False) for m in (transformer, controlnet)]


def plan(frames: int, height: int, width: int, tile: int) -> tuple[list, tuple[int, ...]]:
    """Spatial tiles and the clip's latent shape [1, T, 16, h, w] by the project's geometry rules (upscale 1)."""
    geometry = plan_geometry(height, width, 1.0, tile)
    tiles = plan_tiles(*geometry.latent_size, tile, tile // 2)
    return tiles, latent_shape(frames + frame_padding(frames), geometry)


def inputs(transformer, frames: int, height: int, width: int, tile: int, device, dtype):
    """Tiles, the initial state and the conditioning of one clip (random tensors)."""
    tiles, shape = plan(frames, height, width, tile)
    generator = torch.Generator(device=device).manual_seed(42)
    randn = lambda *s: torch.randn(*s, generator=generator, device=device, dtype=dtype)  # noqa: E731
    cfg = transformer.config
    text = (len(tiles), cfg.max_text_seq_length, cfg.text_embed_dim)
    conditioning = ClipConditioning(randn(shape), randn(text), randn(text))
    state = DenoiseState(step=0, clips=[ClipState(randn(shape))], generator_state=generator.get_state())
    return tiles, state, conditioning, generator


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(models, solver, tiles, state, conditioning, generator, steps: int, device) -> tuple[list[float], bool]:
    """Wall seconds of each denoising step (synchronised), and whether the final latents are finite."""
    transformer, controlnet = models
    settings = SamplerSettings(steps=steps, guidance=6.0)
    marks = []

    def on_step(_state: DenoiseState) -> None:
        synchronize(device)
        marks.append(time.perf_counter())

    synchronize(device)
    marks.append(time.perf_counter())
    final = sample_clips(transformer, controlnet, solver, state, [conditioning], tiles, (), generator, settings,
                         callback=on_step)
    return [b - a for a, b in zip(marks, marks[1:])], bool(torch.isfinite(final.clips[0].latents).all())


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()


def peak_tflops(name: str, override: float | None) -> float | None:
    if override is not None:
        return override
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k.lower() in name.lower()), None)


def run(args: argparse.Namespace) -> dict:
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    config = TINY_CONFIG if args.tiny else FULL_CONFIG
    build0 = time.perf_counter()
    models = build_models(config, args.controlnet_layers, device, dtype)
    synchronize(device)
    build_s = time.perf_counter() - build0
    tiles, state, conditioning, generator = inputs(models[0], args.frames, args.height, args.width, args.tile,
                                                   device, dtype)
    if len(tiles) != 1:
        sys.exit(f"{args.height}x{args.width} with tile {args.tile} gives {len(tiles)} tiles; this benchmark wants one")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    solver = GuidedDPMSolver(CogVideoXDPMScheduler.from_config(model_kwargs(SCHEDULER_CONFIG)))
    step_s, finite = timed_steps(models, solver, tiles, state, conditioning, generator, args.warmup + args.steps, device)
    return report(args, models, state, device, step_s, finite, build_s)


def report(args, models, state, device, step_s: list[float], finite: bool, build_s: float) -> dict:
    transformer, controlnet = models
    cfg = transformer.config
    _, frames, _, h, w = state.clips[0].latents.shape
    video_tokens = (frames // cfg.patch_size_t) * (h // cfg.patch_size) * (w // cfg.patch_size)
    flops = flop_model(video_tokens, cfg.max_text_seq_length, cfg.num_attention_heads * cfg.attention_head_dim,
                       cfg.num_layers, controlnet.config.num_layers, frames * h * w, cfg_batch=2)
    seconds = statistics.median(step_s[args.warmup:])
    name, achieved = device_name(device), flops["per_step"] / seconds / 1e12
    peak = peak_tflops(name, args.peak_tflops)
    memory = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {
        "what": "Vivid-VR denoising steps, random weights (benchmarks/full_size_gpu.py)",
        "config": "tiny" if args.tiny else "CogVideoX1.5-5B + 6-block ControlNet",
        "device": str(device), "device_name": name, "dtype": args.dtype,
        "torch": torch.__version__, "diffusers": __import__("diffusers").__version__,
        "video": {"frames": args.frames, "height": args.height, "width": args.width, "tile": args.tile},
        "latent_shape": list(state.clips[0].latents.shape), "video_tokens": video_tokens,
        "text_tokens": cfg.max_text_seq_length, "cfg_batch": 2,
        "params": {"transformer": sum(p.numel() for p in transformer.parameters()),
                   "controlnet": sum(p.numel() for p in controlnet.parameters())},
        "build_s": round(build_s, 2), "warmup_steps": args.warmup, "timed_steps": args.steps,
        "step_seconds": [round(s, 4) for s in step_s], "seconds_per_step": round(seconds, 4),
        "peak_gpu_memory_bytes": memory, "peak_gpu_memory_gib": round(memory / 2**30, 2) if memory else None,
        "model_flops_per_step": flops["per_step"], "model_flops_parts": flops["parts"],
        "achieved_tflops": round(achieved, 4), "peak_tflops": peak,
        "mfu": round(achieved / peak, 4) if peak else None, "output_finite": finite,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny config on CPU (tests the code path)")
    parser.add_argument("--steps", type=int, default=3, help="timed denoising steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--frames", type=int, help="video frames (default 49; tiny 9)")
    parser.add_argument("--height", type=int, help="pixels (default 1024; tiny 32)")
    parser.add_argument("--width", type=int, help="pixels (default 1024; tiny 32)")
    parser.add_argument("--tile", type=int, help="spatial tile in latent px (default 128; tiny 4)")
    parser.add_argument("--controlnet-layers", type=int, help="default 6 (the official ControlNet); tiny 1")
    parser.add_argument("--device", help="default cuda; tiny cpu")
    parser.add_argument("--dtype", help="default bfloat16; tiny float32")
    parser.add_argument("--peak-tflops", type=float, help="device peak for the MFU (default: from the device name)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    defaults = (dict(frames=9, height=32, width=32, tile=4, controlnet_layers=1, device="cpu", dtype="float32")
                if args.tiny else
                dict(frames=49, height=1024, width=1024, tile=128, controlnet_layers=6, device="cuda", dtype="bfloat16"))
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA device: run on a GPU, or pass --tiny to check the code path on CPU")
    result = run(args)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
