"""The Vivid-VR engine: the paper's restoration, resumable step by step through the job cache.

Per input it plans the run, gathers captions, and streams `pipeline.restore_frames`. Captions come
from `--caption`/`--captions-file`, else from a vision-language model: `--captioner MODEL`, or by
default the captioner in the checkpoint folder (`stages.captioners.choose_captioner`; when it is not
installed the engine warns once and uses empty captions). The captioning model is loaded, run and
freed before the restoration models are loaded; in a batch, the restoration models are freed before
the next input is captioned, so the two never share the GPU. With a cache
(the default for file inputs) each clip's conditioning (control latents, prompt embeddings) is saved
once it is encoded, and the denoising state after encoding and after every step, atomically;
re-running the same command with the same input, checkpoint and options resumes from the last saved
step without encoding anything again, and gives bit-identical output because the state includes the
random generator. Entries and what a resume skips: docs/cache.md.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vividcli.cache.store import (
    JobCache,
    JobInfo,
    cache_root,
    canonical_json,
    checkpoint_identity,
    input_identity,
    job_key,
    load_state,
    save_state,
)
from vividcli.config import RestoreOptions
from vividcli.hub import download_command
from vividcli.interrupt import GracefulInterrupt, Interrupted
from vividcli.media.reader import FrameSource
from vividcli.models.loading import VividVRModels, load_models
from vividcli.models.offload import resolve_memory
from vividcli.parallel import StepGroup
from vividcli.pipeline import PreparedClips, conditioning_mismatch, restore_frames
from vividcli.planning.cost import MemoryChoice
from vividcli.planning.geometry import plan_geometry
from vividcli.planning.plan import RestorePlan, plan_restoration
from vividcli.progress import NullProgress, Progress
from vividcli.sampling.sampler import ClipConditioning, DenoiseState
from vividcli.stages.caption import CaptionsFile, FixedCaptions, NoCaptions, generate_captions
from vividcli.stages.captioners import CaptionerChoice, choose_captioner, make_captioner

CACHE_FORMAT_VERSION = 1
CONDITIONING_TENSORS = ("control_latents", "prompt_embeds", "negative_prompt_embeds")  # ClipConditioning's fields
log = logging.getLogger(__name__)


def conditioning_entry(clip_index: int) -> str:
    """The cache entry of one clip's conditioning."""
    return f"conditioning-clip{clip_index:04d}"


def captions_digest(clip_captions: list[str]) -> str:
    """Which captions a saved conditioning was encoded from (stored in its meta, checked on load)."""
    return hashlib.sha256(canonical_json(list(clip_captions))).hexdigest()


@dataclass(frozen=True)
class VividSettings:
    """How to run Vivid-VR for a batch: checkpoints, device, captions and caching."""

    ckpt_dir: Path
    options: RestoreOptions = RestoreOptions()
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    caption: str | None = None  # one caption for every clip and tile
    captions_file: Path | None = None
    # A vision-language model id or folder; "none": empty captions; None: the default captioner from
    # `ckpt_dir` if it is installed, else one warning and empty captions.
    captioner: str | None = None
    trust_remote_code: bool = False
    cache_dir: Path | None = None
    use_cache: bool = True
    resume: bool = True
    checkpoint_every: int = 1
    keep_cache: bool = False
    offload: str = "auto"  # models/offload.py: none, model, group, sequential, or auto
    weights: str = "bf16"  # bf16 (the compute dtype) or fp8 storage of the denoising models
    ff_chunks: int = 1  # token slices of the denoising blocks (models/chunking.py); --offload auto may add them
    max_vram: float | None = None  # GiB budget of --offload auto (None: the device's free memory)
    group: StepGroup | None = None  # this process leads a step-parallel job (vividcli.parallel)


class VividEngine:
    name = "vivid"
    resumable = True  # a stopped job resumes from its cache (the runner's Ctrl-C message says so)

    def __init__(self, settings: VividSettings, *, interrupt: GracefulInterrupt | None = None,
                 say: Callable[[str], None] = log.info, output_for: Callable[[FrameSource], str] = lambda s: ""):
        self.settings = settings
        self.interrupt = interrupt
        self.say = say
        self.output_for = output_for
        self._models: VividVRModels | None = None
        self._captioner: CaptionerChoice | None = None
        self._memory: MemoryChoice | None = None  # offload mode, sequential CFG, token chunks of this batch

    @property
    def models(self) -> VividVRModels:
        """Loaded on first use and shared by every input of a batch (until a captioner needs the memory)."""
        if self._models is None:
            s = self.settings
            if self._memory is None:  # asked for before any input was planned: plan for the paper's setting
                self.choose_memory(plan_restoration(121, 1024, 1820, s.options))
            memory = self._memory
            if torch.device(s.device).type == "cuda":  # on the CPU there is nothing to offload
                self.say(f"memory: {memory.describe()}" + (" (auto)" if s.offload == "auto" else ""))
            self._models = load_models(s.ckpt_dir, dtype=s.dtype, device=s.device, offload=memory.offload,
                                       weights=s.weights, ff_chunks=memory.ff_chunks)
        return self._models

    def choose_memory(self, plan: RestorePlan) -> MemoryChoice:
        """`--offload auto` through the planner, once per batch (the first input's plan, before its cache key
        is made): the fastest mode, with token chunking and then sequential CFG where needed, whose planned
        peak fits the device's free memory or `max_vram` (models.offload.resolve_memory; UsageError when
        nothing does). A sequential CFG chosen here becomes part of the options, so of the job's cache key."""
        if self._memory is None:
            s = self.settings
            budget = s.max_vram * 2**30 if s.max_vram is not None else None
            self._memory = resolve_memory(s.offload, s.device, plan, s.options, s.weights, s.ff_chunks, s.dtype,
                                          budget_bytes=budget)
            if self._memory.sequential_cfg and not s.options.sequential_cfg:
                self.settings = dataclasses.replace(s, options=dataclasses.replace(s.options, sequential_cfg=True))
        return self._memory

    def release_models(self) -> None:
        """Free the restoration models (loaded again on next use), so that a captioner never shares
        the GPU with them."""
        if self._models is None:
            return
        self._models = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    @property
    def captioner(self) -> CaptionerChoice:
        """The captioning model of this batch, decided once; a default captioner that cannot be used
        is reported here, once per batch."""
        if self._captioner is None:
            s = self.settings
            self._captioner = choose_captioner(s.captioner, s.ckpt_dir,
                                               download_command=download_command("captioner", s.ckpt_dir))
            if self._captioner.warning:
                self.say(f"warning: {self._captioner.warning}")
        return self._captioner

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
        if self.captioner.model is None:
            return NoCaptions()
        return None

    def caption_with_model(self, plan: RestorePlan, source: FrameSource, progress: Progress) -> list[list[str]]:
        """Caption every tile of every clip; the model is freed again before this returns, and the
        restoration models are not in memory meanwhile."""
        s, choice = self.settings, self.captioner
        self.release_models()
        self.say(f"captioning {len(plan.tiles)} tiles x {len(plan.clips)} clips with {choice.label}")
        captioner = make_captioner(choice.model, s.device, s.dtype, s.trust_remote_code)
        progress.stage("caption", len(plan.clips) * len(plan.tiles))
        try:
            return generate_captions(plan, source, captioner, float(source.info.fps),
                                     progress=lambda *_: progress.advance())
        finally:
            captioner.unload()
            del captioner

    def restore(self, source: FrameSource, progress: Progress | None = None) -> Iterator[np.ndarray]:
        progress = progress or NullProgress()
        plan = plan_restoration(source.num_frames, source.height, source.width, self.settings.options)
        self.choose_memory(plan)  # may turn on sequential CFG: before the cache key and the run use the options
        known = self.caption_source()
        captions = generate_captions(plan, source, known, float(source.info.fps)) if known else None
        cache = self._open_cache(source, captions)
        if cache is None:
            captions = captions or self.caption_with_model(plan, source, progress)
            frames = restore_frames(self.models, source, captions, self.settings.options, progress=progress,
                                    group=self.settings.group)
            yield from (np.clip(f, 0, 1) for f in frames)
            return
        with cache.lock():
            cache.sweep()
            if captions is None:
                captions = cache.get_json("captions")
                if captions is None:
                    captions = self.caption_with_model(plan, source, progress)
                    cache.put_json("captions", captions)
                else:
                    self.say(f"using the cached captions of {self.captioner.label}")
            yield from self._restore_cached(cache, source, captions, progress)

    def _job_options(self, captions: list[list[str]] | None) -> dict:
        """Everything that changes the numerics; model captions are keyed by the captioner's name."""
        s = self.settings
        text = {"captions": captions} if captions is not None else {"captioner": self.captioner.model}
        return {**dataclasses.asdict(s.options), **text, "dtype": str(s.dtype), "device": torch.device(s.device).type,
                **({"weights": s.weights} if s.weights != "bf16" else {})}

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
        # Resuming: the saved conditioning replaces the whole encode stage (no frame reads, VAE or T5).
        # A missing, damaged or unfitting entry of any clip means encoding all of them again.
        conditioning = self._load_conditioning(cache, source, captions, resume) if resume is not None else None
        on_prepared = None if conditioning is not None else self._conditioning_saver(cache, captions, resume, on_step)
        frames = restore_frames(self.models, source, captions, s.options, resume=resume, conditioning=conditioning,
                                on_prepared=on_prepared, on_step=on_step, progress=progress, group=s.group)
        del conditioning  # restore_frames lets go of it after denoising; so must we
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
        keep = self.models.placement.host_storage  # clips live on the host between their turns
        tensors = {k: (v if k in ("generator_state", "step") else keep(v)) for k, v in tensors.items()}
        state = DenoiseState.from_tensors(tensors, num_clips)
        if step != state.step:
            return None
        self.say(f"resuming at step {state.step}/{self.settings.options.steps}")
        return state

    def _load_conditioning(self, cache: JobCache, source: FrameSource, captions: list[list[str]],
                           resume: DenoiseState) -> list[ClipConditioning] | None:
        """Every clip's saved conditioning, kept where the models keep it; None unless all are there and fit."""
        conditioning, keep = [], self.models.placement.host_storage
        for i, clip_captions in enumerate(captions):
            name = conditioning_entry(i)
            got = cache.get_tensors(name)  # verified: a damaged entry is reported, dropped and None
            if got is None:
                return None
            tensors, meta = got
            digest = captions_digest(clip_captions)
            if set(tensors) != set(CONDITIONING_TENSORS) or meta.get("captions_sha256") != digest:
                cache.discard(name, "not the conditioning of this clip")
                return None
            conditioning.append(ClipConditioning(*(keep(tensors[k]) for k in CONDITIONING_TENSORS)))
        plan = plan_restoration(source.num_frames, source.height, source.width, self.settings.options)
        problem = conditioning_mismatch(conditioning, plan, resume)
        if problem is not None:
            for i in range(len(captions)):
                cache.discard(conditioning_entry(i), f"not the conditioning of this state ({problem})")
            return None
        return conditioning

    def _conditioning_saver(self, cache: JobCache, captions: list[list[str]], resume: DenoiseState | None,
                            on_step: Callable[[DenoiseState], None]) -> Callable[[PreparedClips], None]:
        """Saves each clip's conditioning and then, for a fresh start, the initial state (step 0).

        The state comes last, so a saved state always has its conditioning saved before it; a
        resumed run whose conditioning had to be recomputed keeps its state.
        """

        def on_prepared(prepared: PreparedClips) -> None:
            for i, (cond, clip_captions) in enumerate(zip(prepared.conditioning, captions)):
                tensors = {k: getattr(cond, k).detach().to("cpu", copy=True) for k in CONDITIONING_TENSORS}
                cache.put_tensors(conditioning_entry(i), tensors,
                                  meta={"what": "clip-conditioning", "clip": i,
                                        "captions_sha256": captions_digest(clip_captions)})
            if resume is None:
                on_step(prepared.initial)  # saved like any step; a stop asked for during encoding stops here

        return on_prepared

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
