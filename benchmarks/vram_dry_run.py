"""Full-size Vivid-VR restoration on a simulated GPU: peak device and host memory per stage, no GPU needed.

Inside torch's `FakeTensorMode` tensors carry shapes, dtypes and devices but no data, so the real
CogVideoX1.5-5B transformer, the 6-block ControlNet, the CogVideoX VAE and T5-v1.1-XXL are built at
full size on a fake `cuda` device in about a second, and the project's own pipeline
(`vividcli.pipeline.restore_frames`: VAE encode, T5, one denoising step of every clip through
ControlNet + connectors, the temporal merge, decode and colour fix) runs on them. A small
TorchDispatchMode adds each new storage's bytes to its device's count and subtracts them when the
storage dies, which gives the live peak per device and per stage. Any tensor on the wrong device
raises FakeTensorDeviceMismatchError (exit 1). Facts and pitfalls: ../shared/docs/performance.md,
"Simulating a GPU on a CPU-only machine".

    .venv/bin/python benchmarks/vram_dry_run.py --json                       # 121 x 1024x1820, none, bf16
    .venv/bin/python benchmarks/vram_dry_run.py --frames 241 --offload model --weights fp8 --json
    .venv/bin/python benchmarks/vram_dry_run.py --tiny --json                # tiny configs, seconds

What is simulated and what is not (kernel speed, allocator fragmentation, cuBLAS workspaces, the
Python/torch runtime's own host memory): docs/benchmarks.md, "Simulated GPU memory".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from vividcli.testing.dry_run import DryRunSpec, run_dry

GIB = 2**30


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, help="input frames (default 121; tiny 9)")
    parser.add_argument("--height", type=int, help="input height in pixels (default 1024; tiny 32)")
    parser.add_argument("--width", type=int, help="input width in pixels (default 1820; tiny 48)")
    parser.add_argument("--offload", default="none", choices=("none", "model", "group", "sequential"))
    parser.add_argument("--weights", default="bf16", choices=("bf16", "fp8"))
    parser.add_argument("--sequential-cfg", action="store_true", help="CFG halves one after another at batch 1")
    parser.add_argument("--ff-chunks", type=int, default=1,
                        help="run the blocks' feed-forward and rotary embedding in N token slices (1: off)")
    parser.add_argument("--color-fix", default="adain", choices=("adain", "none"))
    parser.add_argument("--upscale", type=float, help="as vividvr restore (default 0: short side to 1024; tiny 1)")
    parser.add_argument("--tile-size", type=int, help="latent pixels (default 128; tiny 4)")
    parser.add_argument("--clip-frames", type=int, help="frames per clip (default 121; tiny 9)")
    parser.add_argument("--tiny", action="store_true", help="tiny configs (vividcli.testing.checkpoints.TinySpec)")
    parser.add_argument("--json", action="store_true", help="print one JSON object (default: a short table)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    defaults = (dict(frames=9, height=32, width=48, upscale=1.0, tile_size=4, clip_frames=9) if args.tiny else
                dict(frames=121, height=1024, width=1820, upscale=0.0, tile_size=128, clip_frames=121))
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def spec_of(args: argparse.Namespace) -> DryRunSpec:
    return DryRunSpec(frames=args.frames, height=args.height, width=args.width, offload=args.offload,
                      weights=args.weights, sequential_cfg=args.sequential_cfg, ff_chunks=args.ff_chunks,
                      color_fix=args.color_fix, upscale=args.upscale,
                      tile_size=args.tile_size, clip_frames=args.clip_frames, tiny=args.tiny)


def table(result: dict) -> str:
    lines = [f"{result['offload']} / {result['weights']}: {result['frames']} frames {result['input_size']} -> "
             f"{result['output_size']}, {result['clips']} clips x {result['tiles']} tiles"]
    for stage, peak in result["per_stage"].items():
        lines.append(f"  {stage:8s} {peak / GIB:8.2f} GiB device   {result['per_stage_host'][stage] / GIB:8.2f} GiB host")
    lines.append(f"  {'peak':8s} {result['peak_device_bytes'] / GIB:8.2f} GiB device   "
                 f"{result['peak_host_bytes'] / GIB:8.2f} GiB host")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        result = run_dry(spec_of(args))
    except Exception as exc:  # a device mismatch or any other failure: one line, exit 1
        print(f"error: {type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    result["wall_s"] = round(time.perf_counter() - start, 1)
    result["torch"] = torch.__version__
    text = json.dumps(result, indent=1)
    print(text if args.json else table(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
