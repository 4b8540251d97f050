"""The model sizes the cost model needs, and the shape of one run (`RunShape`), without torch.

`ModelSizes()` holds the official values: the CogVideoX1.5-5B transformer config, Vivid-VR's
6-block ControlNet, 512-wide connectors and 320-wide projectors, the T5-v1.1-XXL encoder and the
CogVideoX VAE. The parameter counts were counted on those models built from the official configs;
`vividcli.testing.dry_run.model_sizes` counts them again from any configs (tiny ones for tests) and
tests/test_plan.py checks that both agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from vividcli.config import RestoreOptions
from vividcli.planning.clips import latent_frame_count
from vividcli.planning.geometry import latent_padding_frames
from vividcli.planning.plan import RestorePlan


@dataclass(frozen=True)
class ModelSizes:
    """Sizes of the Vivid-VR models (defaults: the official checkpoints)."""

    # Transformer (zai-org/CogVideoX1.5-5B transformer/config.json) and the Vivid-VR additions
    heads: int = 48
    head_dim: int = 64
    layers: int = 42
    controlnet_layers: int = 6
    text_length: int = 226  # T5 tokens per prompt (max_text_seq_length)
    patch: int = 2
    patch_t: int = 2
    latent_channels: int = 16
    ff_mult: int = 4  # feed-forward width / hidden (12288 / 3072)
    connector_width: int = 512  # hidden -> 512 -> hidden MLPs in every connector
    projector_width: int = 320  # control feature projector channels
    # Parameter counts (transformer: DiT 5,570,676,352 + connectors 529,095,168 + control branch 17,763,379)
    transformer_params: int = 6_117_534_899
    controlnet_params: int = 825_767_475
    block_params: int = 132_197_632  # one CogVideoXBlock
    connector_params: int = 12_597_504  # one dual-branch connector
    largest_layer_params: int = 37_761_024  # the feed-forward's 3072 x 12288 Linear with its bias
    top_level_params: int = 31_358_080  # transformer layers outside its block lists (embeddings, output)
    projector_pair_params: int = 4_708_834  # the two largest consecutive control projector blocks
    # Stored as float8 under --weights fp8 (diffusers' layerwise casting skips norms, embeddings, projector)
    transformer_fp8_params: int = 5_288_422_400
    controlnet_fp8_params: int = 681_479_168
    block_fp8_params: int = 113_273_856  # attention and feed-forward Linears (not the AdaLN ones: "norm")
    connector_fp8_params: int = 12_597_248
    # T5-v1.1-XXL encoder (zai-org/CogVideoX1.5-5B text_encoder/config.json)
    t5_params: int = 4_762_310_656
    t5_dim: int = 4096
    t5_heads: int = 64
    t5_kv: int = 64
    t5_ff: int = 10240
    t5_layers: int = 24
    # CogVideoX VAE (vae/config.json): channels, tiling (sample size // 2), frames per encoder call
    vae_params: int = 215_583_907
    vae_channels: tuple[int, ...] = (128, 256, 256, 512)
    vae_layers: int = 3  # resnets per encoder block (decoder blocks have one more)
    vae_tile: tuple[int, int] = (240, 360)
    vae_frame_batch: int = 8
    # FLOPs per frame pixel (torch's FlopCounterMode on 9 frames of 64 x 64, untiled)
    vae_encode_flops_per_voxel: float = 9.262e6
    vae_decode_flops_per_voxel: float = 1.889e7

    @property
    def hidden(self) -> int:
        return self.heads * self.head_dim

    def vae_tile_overlap(self, size: tuple[int, int]) -> float:
        """Pixels the tiled VAE processes per frame pixel: tiles of `vae_tile` start every 5/6 (height)
        and 4/5 (width) of a tile, so neighbouring tiles overlap (diffusers' tiling factors)."""
        factor = 1.0
        for length, tile, overlap in zip(size, self.vae_tile, (1 / 6, 1 / 5)):
            if length <= tile:
                continue
            stride = int(tile * (1 - overlap))
            factor *= sum(min(tile, length - start) for start in range(0, length, stride)) / length
        return factor


@dataclass(frozen=True)
class RunShape:
    """The sizes of one run that its cost depends on (the largest clip and tile where they differ)."""

    frames: int
    output_size: tuple[int, int]  # (height, width) of the upscaled output
    vae_size: tuple[int, int]  # what the VAE encodes and decodes
    clips: int
    tiles: int
    steps: int
    cfg: int  # samples per tile evaluation: 2 with classifier-free guidance, 1 without
    cfg_batch: int  # samples per model call: cfg, or 1 with --sequential-cfg
    clip_frames: int  # frames of the longest clip, padded to 8k+1
    kept_frames: int  # decoded frames a clip keeps for the output (the most of any clip)
    latent_frames: int  # its transformer latents (the prepended padding latent included)
    latent_size: tuple[int, int]  # the latent grid of a whole frame
    tile_latent: tuple[int, int]  # the largest tile, in latents
    controlnet_on: bool  # --fidelity 0 skips the ControlNet and the connectors
    color_fix: bool
    dtype_bytes: int = 2  # compute dtype: 2 for bfloat16, 4 for float32

    def video_tokens(self, sizes: ModelSizes) -> int:
        """Video tokens of one tile: latent frames / patch_t x tile / patch (per side)."""
        h, w = self.tile_latent
        return (self.latent_frames // sizes.patch_t) * (h // sizes.patch) * (w // sizes.patch)

    @property
    def tile_calls(self) -> int:
        """Tile evaluations: every tile of every clip at every step."""
        return self.clips * self.tiles * self.steps

    @property
    def model_calls(self) -> int:
        """Transformer (and ControlNet) forwards counted per sample: tile calls x 2 with CFG."""
        return self.tile_calls * self.cfg


def run_shape(plan: RestorePlan, options: RestoreOptions, dtype_bytes: int = 2) -> RunShape:
    """The `RunShape` of restoring `plan` with `options` (`dtype_bytes`: 2 for bf16, 4 for float32)."""
    padded = max(clip.padded_frames for clip in plan.clips)
    vae_latents = latent_frame_count(padded)
    cfg = 2 if options.guidance > 1.0 else 1
    return RunShape(
        frames=plan.num_frames, output_size=plan.output_size, vae_size=plan.geometry.vae_size,
        clips=len(plan.clips), tiles=len(plan.tiles), steps=options.steps, cfg=cfg,
        cfg_batch=1 if options.sequential_cfg else cfg, clip_frames=padded,
        kept_frames=max(clip.keep[1] - clip.keep[0] for clip in plan.clips),
        latent_frames=vae_latents + latent_padding_frames(vae_latents), latent_size=plan.geometry.latent_size,
        tile_latent=(max(t.height for t in plan.tiles), max(t.width for t in plan.tiles)),
        controlnet_on=options.fidelity != 0, color_fix=options.color_fix == "adain", dtype_bytes=dtype_bytes)
