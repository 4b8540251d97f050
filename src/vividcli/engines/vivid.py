"""The Vivid-VR engine: the paper's restoration, resumable step by step through the job cache.

Per input it plans the run, gathers captions, and streams `pipeline.restore_frames`. With a cache
(the default for file inputs) every denoising step's state is saved atomically; re-running the same
command with the same input, checkpoint and options resumes from the last saved step, and gives
bit-identical output because the state includes the random generator.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vividcli.cache.signals import GracefulInterrupt, Interrupted
from vividcli.cache.store import (
    JobCache, JobInfo, cache_root, checkpoint_identity, input_identity, job_key, load_state, save_state,
)
from vividcli.config import RestoreOptions
from vividcli.engines.base import NullProgress, Progress
from vividcli.media.reader import FrameSource
from vividcli.models.loading import VividVRModels, load_models
from vividcli.pipeline import RestorePlan, plan_restoration, restore_frames
from vividcli.sampling.sampler import DenoiseState
from vividcli.stages.geometry import plan_geometry
from vividcli.stages.caption import CaptionsFile, FixedCaptions, NoCaptions, generate_captions, make_captioner

CACHE_FORMAT_VERSION = 1
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VividSettings:
    """How to run Vivid-VR for a batch: checkpoints, device, captions and caching."""

    ckpt_dir: Path
    options: RestoreOptions = RestoreOptions()
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    caption: str | None = None  # one caption for every clip and tile
    captions_file: Path | None = None
    captioner: str | None = None  # a vision-language model id or path; None or "none": empty captions
    trust_remote_code: bool = False
    cache_dir: Path | None = None
    use_cache: bool = True
    resume: bool = True
    checkpoint_every: int = 1
    keep_cache: bool = False


class VividEngine:
    name = "vivid"

    def __init__(self, settings: VividSettings, *, interrupt: GracefulInterrupt | None = None,
                 say: Callable[[str], None] = log.info, output_for: Callable[[FrameSource], str] = lambda s: ""):
        self.settings = settings
        self.interrupt = interrupt
        self.say = say
        self.output_for = output_for
        self._models: VividVRModels | None = None

    @property
    def models(self) -> VividVRModels:
        """Loaded on first use and shared by every input of a batch."""
        if self._models is None:
            s = self.settings
            self._models = load_models(s.ckpt_dir, dtype=s.dtype, device=s.device)
        return self._models

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        o = self.settings.options
        h, w = plan_geometry(height, width, o.upscale, o.tile_size).upscaled_size
        return w, h

    def caption_source(self):
        """Where captions come from when no model is needed (None: a captioning model)."""
        s = self.settings
        if s.captions_file is not None:
            return CaptionsFile(s.captions_file)
        if s.caption is not None:
            return FixedCaptions(s.caption)
        if s.captioner in (None, "none"):
            return NoCaptions()
        return None

    def caption_with_model(self, plan: RestorePlan, source: FrameSource, progress: Progress) -> list[list[str]]:
        s = self.settings
        captioner = make_captioner(s.captioner, s.device, s.dtype, s.trust_remote_code)
        progress.stage("caption", len(plan.clips) * len(plan.tiles))
        try:
            return generate_captions(plan, source, captioner, float(source.info.fps),
                                     tile_size=s.options.tile_size, progress=lambda *_: progress.advance())
        finally:
            captioner.unload()

    def restore(self, source: FrameSource, progress: Progress | None = None) -> Iterator[np.ndarray]:
        progress = progress or NullProgress()
        plan = plan_restoration(source.num_frames, source.height, source.width, self.settings.options)
        known = self.caption_source()
        captions = generate_captions(plan, source, known, float(source.info.fps)) if known else None
        cache = self._open_cache(source, captions)
        if cache is None:
            captions = captions or self.caption_with_model(plan, source, progress)
            frames = restore_frames(self.models, source, captions, self.settings.options, progress=progress)
            yield from (np.clip(f, 0, 1) for f in frames)
            return
        with cache.lock():
            cache.sweep()
            if captions is None:
                captions = cache.get_json("captions")
                if captions is None:
                    captions = self.caption_with_model(plan, source, progress)
                    cache.put_json("captions", captions)
            yield from self._restore_cached(cache, source, captions, progress)

    def _job_options(self, captions: list[list[str]] | None) -> dict:
        """Everything that changes the numerics; model captions are keyed by the captioner's name."""
        s = self.settings
        text = {"captions": captions} if captions is not None else {"captioner": s.captioner}
        return {**dataclasses.asdict(s.options), **text, "dtype": str(s.dtype), "device": torch.device(s.device).type}

    def _open_cache(self, source: FrameSource, captions: list[list[str]] | None) -> JobCache | None:
        s = self.settings
        if not s.use_cache or source.info.kind == "memory":
            return None
        options = self._job_options(captions)
        key = job_key(input_id=input_identity(source.info.path), checkpoint_id=checkpoint_identity(s.ckpt_dir),
                      options=options, format_version=CACHE_FORMAT_VERSION)
        cache = JobCache.open(cache_root(s.cache_dir), key, on_problem=self.say)
        if not s.resume:
            cache.delete("state")
        return cache

    def _restore_cached(self, cache: JobCache, source: FrameSource, captions, progress) -> Iterator[np.ndarray]:
        s = self.settings
        steps = s.options.steps
        cache.write_info(JobInfo(input=str(source.info.path), output=self.output_for(source),
                                 options=self._job_options(captions), status="running",
                                 progress={"step": 0, "steps": steps}, format_version=CACHE_FORMAT_VERSION))
        resume = self._load_resume(cache, len(captions))
        on_step = self._checkpointer(cache, steps)
        frames = restore_frames(self.models, source, captions, s.options, resume=resume, on_step=on_step,
                                progress=progress)
        for frame in frames:
            yield np.clip(frame, 0, 1)
        cache.update_info(status="done")
        if not s.keep_cache:
            cache.drop_bulky()

    def _load_resume(self, cache: JobCache, num_clips: int) -> DenoiseState | None:
        loaded = load_state(cache)
        if loaded is None:
            return None
        tensors, step, rng = loaded
        device = self.models.device
        tensors = {k: (v if k in ("generator_state", "step") else v.to(device)) for k, v in tensors.items()}
        state = DenoiseState.from_tensors(tensors, num_clips)
        if step != state.step:
            return None
        self.say(f"resuming at step {state.step}/{self.settings.options.steps}")
        return state

    def _checkpointer(self, cache: JobCache, steps: int) -> Callable[[DenoiseState], None]:
        every = max(1, self.settings.checkpoint_every)

        def on_step(state: DenoiseState) -> None:
            stopping = self.interrupt is not None and self.interrupt.requested
            if stopping or state.step % every == 0 or state.step == steps:
                # Own copies: safetensors refuses tensors that share memory (x0 can alias the latents).
                tensors = {k: v.detach().to("cpu", copy=True) for k, v in state.tensors().items()}
                save_state(cache, tensors, state.step, state.generator_state)
                cache.update_info(progress={"step": state.step, "steps": steps})
            if stopping:
                cache.update_info(status="interrupted")
                raise Interrupted(self.interrupt.signum)

        return on_step
