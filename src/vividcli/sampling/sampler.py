"""The Vivid-VR denoising loop: tiled CFG sampling of every temporal clip, clips merged after each step.

`sample_clips` is a pure function of (models, state, conditioning, plans, settings, callback) in the
spirit of k-diffusion's samplers. Its whole mutable state is a `DenoiseState` -- every clip's latents
and previous x0 prediction, the next step index and the generator state -- which the callback may
save after any step and `sample_clips` resumes from.

Step-parallel (`group`, vividcli.parallel): the model calls of a step -- one per (clip, tile), in
that order -- are dealt out round robin over the ranks; each rank runs its own, the predictions are
summed over the ranks (every rank contributes zeros for the calls it does not own, so the sum is
exact), and every rank then runs all the solver steps in the single-process order with the same
generator. So every rank holds the same latents, bit-identical to one process on the same hardware.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

import torch
from diffusers.models.embeddings import get_3d_rotary_pos_embed

from vividcli.parallel import StepGroup
from vividcli.planning.clips import LatentCopy
from vividcli.planning.tiles import Tile, tile_weight_mask
from vividcli.sampling.scheduler import GuidedDPMSolver


@dataclass(frozen=True)
class SamplerSettings:
    steps: int = 50
    guidance: float = 6.0
    dynamic_cfg: bool = False
    restoration_guidance: float = -1.0  # <= 0: off
    fidelity: float = 1.0  # γ: scales what Vivid-VR injects into the DiT (1 = as trained, 0 = stock CogVideoX)
    sequential_cfg: bool = False  # the two CFG halves one after another at batch 1 (less memory)


@dataclass(frozen=True)
class ClipConditioning:
    """What stays fixed for one clip while it is denoised."""

    control_latents: torch.Tensor  # [1, T, C, h, w], scaled and padded
    prompt_embeds: torch.Tensor  # [num_tiles, 226, D]
    negative_prompt_embeds: torch.Tensor  # [num_tiles, 226, D]


@dataclass
class ClipState:
    latents: torch.Tensor  # [1, T, C, h, w]
    old_pred_original_sample: torch.Tensor | None = None


@dataclass
class DenoiseState:
    """Everything that changes during sampling; plain tensors, so it can be saved between steps."""

    step: int
    clips: list[ClipState]
    generator_state: torch.Tensor

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"generator_state": self.generator_state, "step": torch.tensor(self.step)}
        for i, clip in enumerate(self.clips):
            out[f"clip{i}.latents"] = clip.latents
            if clip.old_pred_original_sample is not None:
                out[f"clip{i}.old_pred_original_sample"] = clip.old_pred_original_sample
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], num_clips: int) -> "DenoiseState":
        clips = [
            ClipState(tensors[f"clip{i}.latents"], tensors.get(f"clip{i}.old_pred_original_sample"))
            for i in range(num_clips)
        ]
        return cls(step=int(tensors["step"]), clips=clips, generator_state=tensors["generator_state"])


@lru_cache(maxsize=32)
def rotary_embedding(
    latent_frames: int, latent_height: int, latent_width: int, patch_size: int, patch_size_t: int, head_dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """CogVideoX1.5 3D RoPE tables for one tile shape (positions restart at 0 in every tile).

    Cached: the reference recomputes them for every tile and step; they depend only on the shape.
    """
    return get_3d_rotary_pos_embed(
        embed_dim=head_dim,
        crops_coords=None,
        grid_size=(latent_height // patch_size, latent_width // patch_size),
        temporal_size=math.ceil(latent_frames / patch_size_t),
        grid_type="slice",
        max_size=(300 // patch_size, 300 // patch_size),
    )


@lru_cache(maxsize=32)
def device_rotary_embedding(device: torch.device, *shape: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`rotary_embedding(*shape)` on `device`, copied there once rather than for every tile and step."""
    return tuple(table.to(device) for table in rotary_embedding(*shape))


def guidance_scale(settings: SamplerSettings, timestep: torch.Tensor) -> float:
    if not settings.dynamic_cfg:
        return settings.guidance
    # The reference's dynamic-CFG formula, fed with the timestep value as it is.
    progress = (settings.steps - timestep.item()) / settings.steps
    return 1 + settings.guidance * ((1 - math.cos(math.pi * progress**5.0)) / 2)


def predict_noise(
    transformer, controlnet, latents, control_latents, embeds, negative_embeds, timestep, settings: SamplerSettings
) -> torch.Tensor:
    """One ControlNet + transformer evaluation of a tile, with classifier-free guidance.

    The control latents and the timestep are the same for both CFG halves, so they stay at batch 1:
    each model runs its control feature projector once and broadcasts the result to the CFG batch.
    `settings.fidelity` (γ) goes to the transformer, which scales its control injections by it; at
    γ = 0 nothing of the ControlNet reaches the DiT, so it is not run. With `settings.sequential_cfg`
    the unconditional and conditional halves run one after another at batch 1 (half the activations).
    """
    cfg = transformer.config
    frames, _, height, width = latents.shape[1:]
    shape = (frames, height, width, cfg.patch_size, cfg.patch_size_t, cfg.attention_head_dim)
    rope = device_rotary_embedding(latents.device, *shape)

    def evaluate(x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        t = timestep.expand(latents.shape[0])
        states = controlnet(x, text, control_latents, t, image_rotary_emb=rope) if settings.fidelity != 0 else None
        return transformer(
            x, text, t, control_hidden_states=states, image_rotary_emb=rope, control_latents=control_latents,
            conditioning_scale=settings.fidelity,
        ).sample.float()

    if settings.guidance <= 1.0:
        return evaluate(latents, embeds)
    if settings.sequential_cfg:
        uncond, cond = evaluate(latents, negative_embeds), evaluate(latents, embeds)
    else:
        uncond, cond = evaluate(torch.cat([latents, latents]), torch.cat([negative_embeds, embeds])).chunk(2)
    return uncond + guidance_scale(settings, timestep) * (cond - uncond)


def denoise_clip_step(
    transformer,
    controlnet,
    solver: GuidedDPMSolver,
    clip: ClipState,
    cond: ClipConditioning,
    tiles: Sequence[Tile],
    step: int,
    generator: torch.Generator,
    settings: SamplerSettings,
    on_tile: Callable[[], None] | None = None,
    predictions: Sequence[torch.Tensor] | None = None,
) -> ClipState:
    """One solver step of one clip: every tile predicted and stepped, results blended by tile masks.

    `predictions[k]`, when given, is tile k's noise prediction, computed elsewhere (step-parallel)."""
    timesteps = solver.timesteps
    t, t_back = timesteps[step], timesteps[step - 1] if step > 0 else None
    latents_sum = torch.zeros_like(clip.latents)
    x0_sum = torch.zeros_like(clip.latents)
    weight_sum = torch.zeros_like(clip.latents)
    for k, tile in enumerate(tiles):
        region = tile_region(tile)
        control = cond.control_latents[region]
        noise = predictions[k] if predictions is not None else predict_tile(
            transformer, controlnet, clip, cond, tile, t, settings)
        old_x0 = clip.old_pred_original_sample[region] if clip.old_pred_original_sample is not None else None
        tile_latents, tile_x0 = solver.step(
            noise, old_x0 if step > 0 else None, t, t_back, clip.latents[region], generator,
            settings.restoration_guidance, control,
        )
        weight = tile_weight_mask(tile, dtype=clip.latents.dtype, device=clip.latents.device)
        latents_sum[region] += tile_latents.to(clip.latents.dtype) * weight
        x0_sum[region] += tile_x0 * weight
        weight_sum[region] += weight
        if on_tile is not None:
            on_tile()
    return ClipState(latents_sum / weight_sum, x0_sum / weight_sum)


def tile_region(tile: Tile) -> tuple[slice, ...]:
    """Where `tile` sits in a clip's [1, T, C, h, w] latents."""
    rows, cols = tile.slices
    return (slice(None), slice(None), slice(None), rows, cols)


def predict_tile(transformer, controlnet, clip: ClipState, cond: ClipConditioning, tile: Tile, timestep,
                 settings: SamplerSettings) -> torch.Tensor:
    """The guided noise prediction of one tile of one clip (float32)."""
    region = tile_region(tile)
    return predict_noise(
        transformer, controlnet, clip.latents[region], cond.control_latents[region],
        cond.prompt_embeds[tile.index : tile.index + 1], cond.negative_prompt_embeds[tile.index : tile.index + 1],
        timestep, settings,
    )


def predict_owned(
    transformer, controlnet, group: StepGroup, state: DenoiseState, conditioning: Sequence[ClipConditioning],
    tiles: Sequence[Tile], timestep, settings: SamplerSettings, device: torch.device,
    keep: Callable[[torch.Tensor], torch.Tensor],
) -> dict[tuple[int, int], torch.Tensor]:
    """This rank's model calls of one step: {(clip, tile): prediction}, kept by `keep` (on the host)."""
    owned: dict[tuple[int, int], torch.Tensor] = {}
    for c, (clip, cond) in enumerate(zip(state.clips, conditioning)):
        mine = [k for k in range(len(tiles)) if group.owner(c * len(tiles) + k) == group.rank]
        if not mine:
            continue
        clip, cond = clip_on(clip, device), conditioning_on(cond, device)
        for k in mine:
            owned[c, k] = keep(predict_tile(transformer, controlnet, clip, cond, tiles[k], timestep, settings))
    return owned


def exchange_predictions(
    group: StepGroup, owned: dict[tuple[int, int], torch.Tensor], clip_index: int, latents: torch.Tensor,
    tiles: Sequence[Tile],
) -> list[torch.Tensor]:
    """Every tile's prediction of one clip on every rank: one sum over the ranks of a float32 buffer in
    which each rank has filled the calls it owns (zeros elsewhere; x + 0 is exact)."""
    shapes = [latents[tile_region(tile)].shape for tile in tiles]
    sizes = [math.prod(shape) for shape in shapes]
    buffer = torch.zeros(sum(sizes), dtype=torch.float32, device=group.device)
    pieces = buffer.split(sizes)
    for k, piece in enumerate(pieces):
        if (clip_index, k) in owned:
            piece.copy_(owned[clip_index, k].reshape(-1))
    group.sum(buffer)
    return [piece.view(shape).to(latents.device) for piece, shape in zip(pieces, shapes)]


def merge_clips(clips: list[ClipState], copies: Sequence[LatentCopy]) -> None:
    """Overwrite each clip's overlapping latents (and x0) with those of the clip that owns them."""
    for copy in copies:
        dst, src = clips[copy.dst_clip], clips[copy.src_clip]
        d, s = slice(*copy.dst), slice(*copy.src)
        dst.latents[:, d] = src.latents[:, s]
        dst.old_pred_original_sample[:, d] = src.old_pred_original_sample[:, s]


def sample_clips(
    transformer,
    controlnet,
    solver: GuidedDPMSolver,
    state: DenoiseState,
    conditioning: Sequence[ClipConditioning],
    tiles: Sequence[Tile],
    merge: Sequence[LatentCopy],
    generator: torch.Generator,
    settings: SamplerSettings,
    callback: Callable[[DenoiseState], None] | None = None,
    on_tile: Callable[[], None] | None = None,
    device: torch.device | None = None,
    keep: Callable[[torch.Tensor], torch.Tensor] = lambda tensor: tensor,
    group: StepGroup | None = None,
) -> DenoiseState:
    """Run the remaining steps of `state` (temporal aggregate sampling when there are several clips).

    The generator is restored from `state` first, so a resumed run draws exactly the noise an
    uninterrupted one would. `callback(state)` runs after every completed step. Each clip comes to
    `device` (default: where its latents are) for its turn and its new state is handed to `keep`
    (e.g. a copy to host memory), so device memory does not grow with the number of clips; the
    merge works wherever the kept states are. With `group` every rank of a step-parallel job calls
    this with the same arguments (the workers' `callback` is None); a worker the leader stops between
    steps raises ParallelStop.
    """
    device = device if device is not None else state.clips[0].latents.device
    solver.set_timesteps(settings.steps, device=device)
    generator.set_state(state.generator_state)
    with torch.no_grad():
        for step in range(state.step, settings.steps):
            if group is None:
                clips = denoise_step(transformer, controlnet, solver, state, conditioning, tiles, step, generator,
                                     settings, on_tile, device, keep)
            else:
                group.next_step()
                try:
                    clips = denoise_step(transformer, controlnet, solver, state, conditioning, tiles, step, generator,
                                         settings, on_tile, device, keep, group)
                except BaseException as exc:  # the others wait in this step's exchange: the group is broken
                    failure = group.fail(exc)
                    if failure is exc:
                        raise
                    raise failure from exc
            merge_clips(clips, merge)
            state = DenoiseState(step=step + 1, clips=clips, generator_state=generator.get_state())
            if callback is not None:
                callback(state)
    return state


def denoise_step(
    transformer, controlnet, solver: GuidedDPMSolver, state: DenoiseState, conditioning: Sequence[ClipConditioning],
    tiles: Sequence[Tile], step: int, generator: torch.Generator, settings: SamplerSettings,
    on_tile: Callable[[], None] | None, device: torch.device, keep: Callable[[torch.Tensor], torch.Tensor],
    group: StepGroup | None = None,
) -> list[ClipState]:
    """Every clip's state after `step` (before the merge), each handed to `keep`."""
    owned = {}
    if group is not None:
        owned = predict_owned(transformer, controlnet, group, state, conditioning, tiles, solver.timesteps[step],
                              settings, device, keep)
    clips = []
    for c, (clip, cond) in enumerate(zip(state.clips, conditioning)):
        clip = clip_on(clip, device)
        shared = exchange_predictions(group, owned, c, clip.latents, tiles) if group is not None else None
        stepped = denoise_clip_step(transformer, controlnet, solver, clip, conditioning_on(cond, device), tiles, step,
                                    generator, settings, on_tile, predictions=shared)
        clips.append(ClipState(keep(stepped.latents), keep(stepped.old_pred_original_sample)))
    return clips


def clip_on(clip: ClipState, device: torch.device) -> ClipState:
    x0 = clip.old_pred_original_sample
    return ClipState(clip.latents.to(device), x0.to(device) if x0 is not None else None)


def conditioning_on(cond: ClipConditioning, device: torch.device) -> ClipConditioning:
    return ClipConditioning(cond.control_latents.to(device), cond.prompt_embeds.to(device),
                            cond.negative_prompt_embeds.to(device))
