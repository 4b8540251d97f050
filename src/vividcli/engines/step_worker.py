"""A worker of a step-parallel job (vividcli.parallel): the denoising models and nothing else.

It loads the models as the leader's engine does, then follows the leader: for every job the leader
announces it takes the conditioning and starting state, and runs its share of every step's model
calls and all of the solver steps, until the leader says stop. It reads and writes no file.
"""

from __future__ import annotations

import torch

from vividcli.engines.vivid import VividEngine
from vividcli.parallel import JOB, ParallelStop, StepGroup
from vividcli.sampling.sampler import sample_clips
from vividcli.sampling.scheduler import GuidedDPMSolver
from vividcli.sampling.shared import receive_job


def serve_steps(engine: VividEngine, group: StepGroup) -> int:
    """Follow the leader's jobs until it says stop; returns how many jobs were shared."""
    models = engine.models
    jobs = 0
    while group.command() == JOB:
        job = receive_job(group, keep=models.placement.host_storage)
        jobs += 1
        generator = torch.Generator(device=models.device)
        with models.placement.denoising():
            try:
                sample_clips(models.transformer, models.controlnet, GuidedDPMSolver(models.scheduler), job.state,
                             job.conditioning, job.tiles, job.merge, generator, job.settings, device=models.device,
                             keep=models.placement.host_storage, group=group)
            except ParallelStop:
                break
    return jobs
