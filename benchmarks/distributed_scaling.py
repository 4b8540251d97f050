"""Step-parallel scaling on CPU ranks: the medium models, one process against N gloo ranks, same run.

The medium configuration of benchmarks/medium_timing.py (the h384 or h768 transformer with 8
layers, a 2-layer ControlNet, the small VAE; random, fixture re-initialisation) and its input (17
frames 256x256), with smaller spatial tiles so that a step has several model calls to share: tile 24
latents (192 px) at stride 8, 1 clip x 4 tiles = 4 model calls a step (2 per rank with 2 ranks).
(Not a wider input: the medium VAE's tile settings, unlike the official VAE's, give 81 latents for
640 px, which the pipeline refuses.) Each run is its own set of
processes (one thread each, as torchrun sets); the denoising loop (`sample_clips`, all steps) is
timed on every rank, after the models are built and the clips encoded, and the job's time is the
slowest rank's. The ratio is taken between runs made one after another in this invocation, so the
shared host's speed swings cancel as far as they can. Each rank's final latents are compared with
the one-process run's (bit-identical expected).

    .venv/bin/python benchmarks/distributed_scaling.py [--config h384] [--ranks 1,2] [--steps 4] [--json PATH]

CPU only: the medium models are built on the host (medium_timing.build_models); on a GPU machine
time the CLI under torchrun instead (docs/distributed.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from vividcli.config import RestoreOptions
from vividcli.media.reader import ArraySource
from vividcli.parallel import join_group
from vividcli.pipeline import plan_restoration, prepare_clips
from vividcli.progress import NullProgress
from vividcli.sampling.sampler import SamplerSettings, sample_clips
from vividcli.sampling.scheduler import GuidedDPMSolver

sys.path.insert(0, str(Path(__file__).resolve().parent))
import medium_timing  # noqa: E402  (the medium models and the synthetic input)

FRAMES, HEIGHT, WIDTH, TILE = 17, 256, 256, 24


def run_rank(args: argparse.Namespace) -> dict:
    """One process (world 1) or one rank: build, encode, then time the denoising loop."""
    torch.set_num_threads(1)
    device = torch.device("cpu")
    group = join_group(args.rank, args.world, device) if args.world > 1 else None
    ref = medium_timing.reference_dir(args.reference)
    timing = json.loads((ref / "timing" / "medium_timing.json").read_text())
    models = medium_timing.build_models(timing, args.config, ref / "ckpts", torch.float32)
    options = RestoreOptions(upscale=1, tile_size=TILE, clip_frames=17, steps=args.steps, seed=42)
    video = medium_timing.synthetic_video(FRAMES, HEIGHT, WIDTH, medium_timing.INPUT_SEED)
    source = ArraySource(list(video.astype("float32") / 255))
    plan = plan_restoration(FRAMES, HEIGHT, WIDTH, options)
    generator = torch.Generator(device=device).manual_seed(options.seed)
    captions = [["a clip"] * len(plan.tiles) for _ in plan.clips]
    prepared = prepare_clips(models, source, plan, captions, generator, NullProgress())
    settings = SamplerSettings(steps=args.steps, guidance=options.guidance)
    started = time.perf_counter()
    state = sample_clips(models.transformer, models.controlnet, GuidedDPMSolver(models.scheduler), prepared.initial,
                         prepared.conditioning, plan.tiles, plan.merge, generator, settings, device=device, group=group)
    seconds = time.perf_counter() - started
    if group is not None:
        group.leave()
    torch.save([clip.latents.cpu() for clip in state.clips], args.latents)
    return {"rank": args.rank, "loop_s": round(seconds, 3), "calls_per_step": len(plan.clips) * len(plan.tiles)}


def same_bits(ours: list[torch.Tensor], theirs: list[torch.Tensor]) -> bool:
    """Bit for bit (NaN included), clip by clip."""
    return len(ours) == len(theirs) and all(
        a.shape == b.shape and a.dtype == b.dtype and a.numpy().tobytes() == b.numpy().tobytes()
        for a, b in zip(ours, theirs))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: argparse.Namespace, world: int, folder: Path) -> dict:
    """Start `world` rank processes of this script, wait for them, gather their figures."""
    port = str(free_port())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
    procs = []
    for rank in range(world):
        command = [sys.executable, __file__, "--config", args.config, "--steps", str(args.steps), "--rank", str(rank),
                   "--world", str(world), "--latents",
                   str(folder / f"w{world}r{rank}.pt"), *(["--reference", args.reference] if args.reference else [])]
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True))
    ranks = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            sys.exit(f"a rank of the {world}-process run failed (exit {proc.returncode})")
        ranks.append(json.loads(out.strip().splitlines()[-1]))
    return {"world": world, "loop_s": max(r["loop_s"] for r in ranks), "ranks": ranks,
            "calls_per_step": ranks[0]["calls_per_step"], "max_calls_per_rank_per_step":
            -(-ranks[0]["calls_per_step"] // world)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=("h768", "h384"), default="h384")
    parser.add_argument("--ranks", default="1,2", help="comma-separated process counts to time")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--reference", help="fixture folder (default: $VIVIDVR_REFERENCE or ../shared/fixtures/reference)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--world", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--latents", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rank is not None:  # a child: one rank
        print(json.dumps(run_rank(args)), flush=True)
        return 0
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for world in (int(n) for n in args.ranks.split(",")):
            runs.append(launch(args, world, Path(tmp)))
            print(f"{world} process(es): loop {runs[-1]['loop_s']:.2f} s", flush=True)
        single = torch.load(Path(tmp) / "w1r0.pt", weights_only=True) if runs[0]["world"] == 1 else None
        for run in runs:
            if single is not None:
                ranks = [torch.load(Path(tmp) / f"w{run['world']}r{r}.pt", weights_only=True)
                         for r in range(run["world"])]
                run["identical_to_one_process"] = all(same_bits(latents, single) for latents in ranks)
                run["finite"] = all(bool(t.isfinite().all()) for latents in ranks for t in latents)
    base = runs[0]["loop_s"]
    for run in runs:
        run["speedup_vs_first"] = round(base / run["loop_s"], 3)
    result = {
        "what": "step-parallel denoising loop, medium models, one process vs N ranks (benchmarks/distributed_scaling.py)",
        "config": args.config, "device": "cpu", "steps": args.steps,
        "input": {"frames": FRAMES, "height": HEIGHT, "width": WIDTH, "tile_size": TILE},
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "torch": torch.__version__, "threads_per_process": 1, "runs": runs,
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
