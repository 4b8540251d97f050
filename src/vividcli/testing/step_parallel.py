"""Test support: `sample_clips` on the tiny checkpoint in one process, or as one rank of a gloo group.

    python -m vividcli.testing.step_parallel CKPT OUT.pt [RANK WORLD PORT]

Every run plans the same small input (3 temporal clips x 3 spatial tiles), encodes it the same way
and samples it; the result file holds the final latents and, per step, how many tile predictions
this process ran (counted with a forward hook on the transformer). One thread per process, so a
rank and a single process compute every model call alike.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

from vividcli.config import RestoreOptions
from vividcli.media.reader import ArraySource
from vividcli.models.loading import load_models
from vividcli.parallel import StepGroup, join_group
from vividcli.pipeline import prepare_clips
from vividcli.planning.plan import plan_restoration
from vividcli.progress import NullProgress
from vividcli.sampling.sampler import SamplerSettings, sample_clips
from vividcli.sampling.scheduler import GuidedDPMSolver

OPTIONS = RestoreOptions(upscale=1, tile_size=4, clip_frames=9, steps=3, seed=7)
FRAMES, HEIGHT, WIDTH = 17, 32, 64  # 3 clips x 3 tiles: 9 model calls a step, split 5 + 4 over 2 ranks


def tiny_input() -> ArraySource:
    rng = np.random.default_rng(3)
    return ArraySource(list(rng.random((FRAMES, HEIGHT, WIDTH, 3), dtype=np.float32)))


def sample(ckpt_dir: str, group: StepGroup | None = None) -> dict:
    """Encode and sample the tiny input; {latents: [...], calls: [per step], units: calls a step}."""
    torch.set_num_threads(1)
    models = load_models(ckpt_dir, torch.float32, "cpu")
    source = tiny_input()
    plan = plan_restoration(source.num_frames, source.height, source.width, OPTIONS)
    generator = torch.Generator().manual_seed(OPTIONS.seed)
    captions = [["a clip"] * len(plan.tiles) for _ in plan.clips]
    prepared = prepare_clips(models, source, plan, captions, generator, NullProgress())
    calls: list[int] = []
    counted = [0]
    models.transformer.register_forward_hook(lambda *_: counted.__setitem__(0, counted[0] + 1))

    def after_step(_state) -> None:
        calls.append(counted[0])
        counted[0] = 0

    settings = SamplerSettings(steps=OPTIONS.steps, guidance=OPTIONS.guidance)
    state = sample_clips(models.transformer, models.controlnet, GuidedDPMSolver(models.scheduler), prepared.initial,
                         prepared.conditioning, plan.tiles, plan.merge, generator, settings, callback=after_step,
                         group=group)
    return {"latents": [clip.latents for clip in state.clips], "calls": calls,
            "units": len(plan.clips) * len(plan.tiles)}


def main(argv: list[str]) -> int:
    ckpt_dir, out = argv[0], argv[1]
    group = None
    if len(argv) > 2:
        rank, world, port = (int(a) for a in argv[2:5])
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        group = join_group(rank, world, "cpu")
    try:
        torch.save(sample(ckpt_dir, group), out)
    finally:
        if group is not None:
            group.leave()  # no command loop here: the ranks just part
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
