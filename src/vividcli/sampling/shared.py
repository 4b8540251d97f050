"""Handing a denoising job from the leader to the workers of a step-parallel run (vividcli.parallel).

The leader sends what `sample_clips` needs besides the models -- settings, tiles, merge plan, every
clip's conditioning and the state to start from (a fresh one or a resumed one) -- so every rank
starts the job from the same tensors, whatever the leader read from its cache.

    leader:  share_job(group, job); sample_clips(..., group=group)
    worker:  while group.command() == JOB: job = receive_job(group, keep); sample_clips(..., group=group)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from vividcli.parallel import JOB, StepGroup
from vividcli.planning.clips import LatentCopy
from vividcli.planning.tiles import Tile
from vividcli.sampling.sampler import ClipConditioning, DenoiseState, SamplerSettings

CONDITIONING_FIELDS = ("control_latents", "prompt_embeds", "negative_prompt_embeds")
HOST_TENSORS = ("generator_state", "step")  # state tensors that stay on the host whatever the device


@dataclass(frozen=True)
class SamplingJob:
    """Everything but the models that `sample_clips` needs for one input."""

    settings: SamplerSettings
    tiles: Sequence[Tile]
    merge: Sequence[LatentCopy]
    conditioning: Sequence[ClipConditioning]
    state: DenoiseState


def job_tensors(job: SamplingJob) -> dict[str, torch.Tensor]:
    tensors = {f"clip{i}.{name}": getattr(cond, name) for i, cond in enumerate(job.conditioning)
               for name in CONDITIONING_FIELDS}
    return {**tensors, **job.state.tensors()}


def share_job(group: StepGroup, job: SamplingJob) -> None:
    """Leader: announce a job and send it to every worker."""
    tensors = job_tensors(job)
    group.command(JOB)
    group.broadcast_object({
        "settings": job.settings, "tiles": list(job.tiles), "merge": list(job.merge),
        "clips": len(job.conditioning), "tensors": [(name, tuple(t.shape), t.dtype) for name, t in tensors.items()],
    })
    for tensor in tensors.values():
        group.broadcast(tensor.to(group.device))


def receive_job(group: StepGroup, keep: Callable[[torch.Tensor], torch.Tensor]) -> SamplingJob:
    """Worker, after the leader's JOB command: the job, its tensors kept by `keep` (host storage)."""
    header = group.broadcast_object()
    tensors = {}
    for name, shape, dtype in header["tensors"]:
        tensor = torch.empty(shape, dtype=dtype, device=group.device)
        group.broadcast(tensor)
        tensors[name] = tensor.cpu() if name in HOST_TENSORS else keep(tensor)
    conditioning = [ClipConditioning(*(tensors[f"clip{i}.{name}"] for name in CONDITIONING_FIELDS))
                    for i in range(header["clips"])]
    state = DenoiseState.from_tensors(tensors, header["clips"])
    return SamplingJob(header["settings"], header["tiles"], header["merge"], conditioning, state)
