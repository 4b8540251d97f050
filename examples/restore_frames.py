"""Restore a clip with the Python API: frames in, frames out (what `vividvr restore` runs inside).

    python examples/restore_frames.py in.mp4 out_frames/ --ckpt-dir ~/ckpts --caption "a man walks a dog"

Without the real weights, try it on a tiny random checkpoint (the output is noise, the plumbing real):

    python -m vividcli.testing.checkpoints /tmp/tiny-ckpts
    python examples/restore_frames.py in.mp4 out_frames/ --ckpt-dir /tmp/tiny-ckpts --upscale 1 --tile-size 4 --steps 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vividcli.config import RestoreOptions
from vividcli.media.reader import open_source
from vividcli.models.loading import load_models
from vividcli.pipeline import plan_restoration, restore_frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path, help="a video file or a folder of PNG/JPG frames")
    parser.add_argument("output", type=Path, help="folder for the restored PNG frames")
    parser.add_argument("--ckpt-dir", type=Path, required=True, help="official checkpoint layout")
    parser.add_argument("--caption", default="", help="one caption for every clip and tile")
    parser.add_argument("--upscale", type=float, default=0.0)
    parser.add_argument("--tile-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    options = RestoreOptions(upscale=args.upscale, tile_size=args.tile_size, steps=args.steps)  # validated here
    source = open_source(args.input)  # streams: frames are decoded when the pipeline asks for them
    plan = plan_restoration(source.num_frames, source.height, source.width, options)
    captions = [[args.caption] * len(plan.tiles) for _ in plan.clips]  # [clip][tile], row-major tiles
    models = load_models(args.ckpt_dir, dtype=dtype, device=device)

    args.output.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(restore_frames(models, source, captions, options)):
        pixels = np.round(np.clip(frame, 0, 1) * 255).astype(np.uint8)  # float32 HxWx3 in, 8-bit PNG out
        Image.fromarray(pixels).save(args.output / f"{i:06d}.png")
    print(f"{source.num_frames} frames at {plan.output_size[1]}x{plan.output_size[0]} -> {args.output}")


if __name__ == "__main__":
    main()
