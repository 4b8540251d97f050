"""Vivid-VR restoration, frames in and frames out (the Python API behind `vividvr restore`).

    plan = plan_restoration(num_frames, height, width, options)   # vividcli.planning: sizes, tiles, clips
    frames = restore_frames(models, source, captions, options)   # an iterator of HxWx3 float32 frames

Stages, in the reference's order and with its random draws: per clip, upscale, pad to 8k+1 frames,
VAE-encode (posterior sample) and draw the initial noise; encode the per-tile prompts; denoise every
clip tile by tile, merging overlapping latents after each step; then per clip decode, trim, and
colour-fix against the upscaled input. Frames are read from the source twice (encode, colour fix),
so only the frames of the clip in flight are ever held, never the whole video.

Resuming: `restore_frames(..., resume=state, conditioning=conds)` continues from a saved
`DenoiseState` with the clips' saved conditioning and skips the encode stage entirely (no frame
reads, no VAE encode, no T5); `on_prepared` hears the conditioning and initial state when they are
computed, so a caller can save them. Where anything is saved is the caller's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor

from vividcli.config import RestoreOptions
from vividcli.errors import CheckpointError
from vividcli.media.reader import FrameSource
from vividcli.models.loading import VividVRModels
from vividcli.parallel import StepGroup
from vividcli.planning.clips import Clip
from vividcli.planning.plan import RestorePlan, plan_restoration
from vividcli.progress import NullProgress, Progress
from vividcli.sampling.sampler import ClipConditioning, ClipState, DenoiseState, SamplerSettings, sample_clips
from vividcli.sampling.scheduler import GuidedDPMSolver
from vividcli.sampling.shared import SamplingJob, share_job
from vividcli.stages.caption_file import parse_captions
from vividcli.stages.colorfix import adain_color_fix
from vividcli.stages.prompts import build_prompts
from vividcli.stages.resize import upscale_video, vae_input
from vividcli.stages.text import encode_prompts
from vividcli.stages.vae import decode_clip_latents, encode_control_latents

# The Python API (README "Python API"): plan, options and restore_frames from one import.
__all__ = ["RestoreOptions", "RestorePlan", "plan_restoration", "restore_frames", "PreparedClips", "prepare_clips",
           "decode_clip", "conditioning_mismatch"]


def read_control_video(source: FrameSource, start: int, stop: int, plan: RestorePlan) -> torch.Tensor:
    """Frames [start, stop) as the upscaled control video [F, C, H, W] in [0, 1] (float32)."""
    frames = np.stack(list(source.frames(start, stop)))
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
    return upscale_video(video, plan.geometry.scale_factor)


@dataclass
class PreparedClips:
    """Per-clip conditioning and the initial denoising state (step 0)."""

    conditioning: list[ClipConditioning]
    initial: DenoiseState


def prepare_clips(
    models: VividVRModels,
    source: FrameSource,
    plan: RestorePlan,
    captions: Sequence[Sequence[str]],
    generator: torch.Generator,
    progress: Progress,
) -> PreparedClips:
    """Encode every clip's control latents and prompts and draw its initial noise, in the reference's
    order (the posterior and noise draws clip by clip; T5 draws nothing, so it runs after the VAE and
    the two never share the device). The results are kept on the host between the clips' turns."""
    placement = models.placement
    progress.stage("encode", len(plan.clips))
    controls, states = [], []
    with placement.stage(models.vae):
        for clip in plan.clips:
            control, noise = encode_clip(models, source, plan, clip, generator)
            controls.append(placement.host_storage(control))
            states.append(ClipState(placement.host_storage(noise)))
            progress.advance()
    conditioning = []
    with placement.stage(models.text_encoder):
        for control, clip_captions in zip(controls, captions):
            positives, negatives = build_prompts(clip_captions)
            conditioning.append(ClipConditioning(control, embed_prompts(models, positives), embed_prompts(models, negatives)))
    return PreparedClips(conditioning, DenoiseState(step=0, clips=states, generator_state=generator.get_state()))


def encode_clip(
    models: VividVRModels, source: FrameSource, plan: RestorePlan, clip: Clip, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One clip's control latents (VAE posterior sample) and initial noise, on the compute device."""
    video = read_control_video(source, clip.start, clip.stop, plan)
    if clip.padding:
        video = torch.cat([video, video[-1:].expand(clip.padding, -1, -1, -1)])
    vae_video = vae_input(video, plan.geometry.gen_size)
    del video
    control = encode_control_latents(models.vae, vae_video, generator, models.dtype,
                                     models.transformer.config.patch_size_t)
    check_latent_size(tuple(control.shape[-2:]), plan, models.vae)
    noise = randn_tensor(control.shape, generator=generator, device=models.device, dtype=models.dtype)
    return control.to(models.device), noise


def check_latent_size(got: tuple[int, int], plan: RestorePlan, vae) -> None:
    """The tiles are planned on vae_size / 8 latents. diffusers' tiled VAE encode gives that for the
    official VAE at every size (its tile stride is a whole number of latents), but a VAE config with
    other tile sizes can give more or fewer, which would leave latents outside every tile."""
    if got != tuple(plan.geometry.latent_size):
        (h, w), (lh, lw) = plan.geometry.vae_size, plan.geometry.latent_size
        raise CheckpointError(
            f"the VAE encoded {h}x{w} frames to {got[0]}x{got[1]} latents, not {lh}x{lw}: its tiled encoding "
            f"(tiles of {vae.tile_sample_min_height}x{vae.tile_sample_min_width} px) does not fit this size; use the "
            "official VAE config (sample_height 480, sample_width 720) or another --upscale")


def embed_prompts(models: VividVRModels, prompts: list[str]) -> torch.Tensor:
    """T5 embeddings of `prompts` (one per tile), kept on the host between the clips' turns."""
    embeds = encode_prompts(models.tokenizer, models.text_encoder, prompts, device=models.device, dtype=models.dtype)
    return models.placement.host_storage(embeds)


def conditioning_mismatch(
    conditioning: Sequence[ClipConditioning], plan: RestorePlan, state: DenoiseState
) -> str | None:
    """Why `conditioning` cannot drive the denoising of `state` under `plan` (None: it fits)."""
    if len(conditioning) != len(plan.clips) or len(state.clips) != len(plan.clips):
        return f"{len(conditioning)} clips of conditioning and {len(state.clips)} of state for {len(plan.clips)} clips"
    for i, (cond, clip) in enumerate(zip(conditioning, state.clips)):
        if cond.control_latents.shape != clip.latents.shape:
            return f"clip {i}: control latents {tuple(cond.control_latents.shape)}, latents {tuple(clip.latents.shape)}"
        positive, negative = cond.prompt_embeds, cond.negative_prompt_embeds
        if positive.ndim != 3 or positive.shape[0] != len(plan.tiles) or negative.shape != positive.shape:
            return (f"clip {i}: prompt embeddings {tuple(positive.shape)} and {tuple(negative.shape)} "
                    f"for {len(plan.tiles)} tiles")
        if {cond.control_latents.dtype, positive.dtype, negative.dtype} != {clip.latents.dtype}:
            return f"clip {i}: conditioning is not {clip.latents.dtype}"
    return None


def check_resumable(conditioning: Sequence[ClipConditioning], plan: RestorePlan, resume: DenoiseState | None) -> None:
    """ValueError unless saved `conditioning` can continue the saved state `resume`."""
    if resume is None:
        raise ValueError("saved conditioning needs the saved denoising state (`resume`) that goes with it")
    problem = conditioning_mismatch(conditioning, plan, resume)
    if problem is not None:
        raise ValueError(f"the conditioning does not fit this run: {problem}")


def decode_clip(
    models: VividVRModels, source: FrameSource, plan: RestorePlan, clip: Clip, state: ClipState, color_fix: str
) -> Iterator[np.ndarray]:
    """Decode one clip, keep its share of the frames, colour-fix them against the input; yield HxWx3 frames."""
    frames = decode_clip_latents(models.vae, state.latents, clip.padded_frames, plan.output_size,
                                 models.transformer.config.patch_size_t)
    keep = frames[clip.keep[0] : clip.keep[1]]
    if color_fix == "adain":
        start = clip.output_start
        reference = read_control_video(source, start, start + keep.shape[0], plan).to(keep.device)
        keep = adain_color_fix(keep, reference)
    for frame in keep.permute(0, 2, 3, 1).cpu().numpy():
        yield frame


def restore_frames(
    models: VividVRModels,
    source: FrameSource,
    captions: Sequence[Sequence[str]],
    options: RestoreOptions,
    *,
    resume: DenoiseState | None = None,
    conditioning: Sequence[ClipConditioning] | None = None,
    on_prepared: Callable[[PreparedClips], None] | None = None,
    on_step: Callable[[DenoiseState], None] | None = None,
    progress: Progress | None = None,
    group: StepGroup | None = None,
) -> Iterator[np.ndarray]:
    """Restore `source`; yields the output frames in order (float32 [H, W, 3], not clipped after AdaIN).

    `captions[c][k]` is the caption of spatial tile k of temporal clip c. `resume` continues from a
    saved denoising state. `conditioning` (only with `resume`) is every clip's conditioning as
    `on_prepared` received it for this source, captions and options: the encode stage is skipped
    (the generator is restored from `resume`, so the output is the same). Without it the clips are
    encoded and `on_prepared(prepared)` hears the result. `on_step` receives the state after every
    step (for checkpointing). `progress` hears the stages "encode" (clips; not when skipped),
    "denoise" (tile evaluations) and "decode" (frames). `group`: this process leads a step-parallel
    job (vividcli.parallel); the workers get the conditioning and state and share every step.
    """
    progress = progress or NullProgress()
    plan = plan_restoration(source.num_frames, source.height, source.width, options)
    captions = parse_captions(captions, len(plan.clips), len(plan.tiles))
    generator = torch.Generator(device=models.device).manual_seed(options.seed)
    if conditioning is None:
        prepared = prepare_clips(models, source, plan, captions, generator, progress)
        if on_prepared is not None:
            on_prepared(prepared)
        conditioning, state = prepared.conditioning, resume if resume is not None else prepared.initial
        del prepared
    else:
        check_resumable(conditioning, plan, resume)
        state = resume
    progress.stage("denoise", (options.steps - state.step) * len(plan.clips) * len(plan.tiles))
    solver = GuidedDPMSolver(models.scheduler)
    settings = SamplerSettings(
        steps=options.steps, guidance=options.guidance, dynamic_cfg=options.dynamic_cfg,
        restoration_guidance=options.restoration_guidance, fidelity=options.fidelity,
        sequential_cfg=options.sequential_cfg,
    )
    if group is not None:
        share_job(group, SamplingJob(settings, plan.tiles, plan.merge, conditioning, state))
    with models.placement.denoising():
        state = sample_clips(
            models.transformer, models.controlnet, solver, state, conditioning, plan.tiles, plan.merge, generator,
            settings, callback=on_step, on_tile=progress.advance, device=models.device,
            keep=models.placement.host_storage, group=group,
        )
    del conditioning
    progress.stage("decode", source.num_frames)
    with models.placement.stage(models.vae):
        for clip, clip_state in zip(plan.clips, state.clips):
            for frame in decode_clip(models, source, plan, clip, clip_state, options.color_fix):
                progress.advance()
                yield frame
