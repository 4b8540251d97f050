"""What a restoration will cost before it runs: model calls, FLOPs per stage, peak memory per offload mode.

    shape = run_shape(plan, options)                       # clips, tiles, steps, tokens, sizes
    cost = estimate(shape, offload="model", weights="fp8")  # flops, device and host bytes per stage
    best = choose_offload(shape, budget_bytes=24e9)         # the fastest mode that fits (UsageError if none)

Pure arithmetic on a `RestorePlan` and the model sizes (`ModelSizes`; defaults are the official
CogVideoX1.5-5B / Vivid-VR / T5-XXL / CogVideoX VAE values): no torch, no weights, no device. The
formulas and where each constant comes from are in docs/planning.md ("Cost model"); the memory terms
reproduce the simulated GPU of `benchmarks/vram_dry_run.py` (docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vividcli.errors import UsageError
from vividcli.planning.memory import device_memory, host_memory
from vividcli.planning.sizes import ModelSizes, RunShape, run_shape

OFFLOAD_ORDER = ("none", "model", "group", "sequential")  # fastest first
WEIGHT_FORMATS = ("bf16", "fp8")
GIB = 2**30
__all__ = ["ModelSizes", "RunShape", "run_shape", "RunCost", "estimate", "choose_offload", "stage_flops",
           "OFFLOAD_ORDER", "WEIGHT_FORMATS"]


# ----------------------------------------------------------------------------------------------- FLOPs


def dit_block_flops(tokens: int, hidden: int, ff_mult: int = 4) -> int:
    """One CogVideoX block, one sample, L tokens: QKV/out projections and the feed-forward (24 L d^2 with
    ff_mult 4) plus attention scores and context (4 L^2 d); the AdaLN modulations are negligible."""
    linear = 2 * tokens * hidden * hidden * (4 + 2 * ff_mult)
    return linear + 4 * tokens * tokens * hidden


def connector_flops(video_tokens: int, hidden: int, width: int) -> int:
    """One dual-branch connector: an N x N cross-attention (4 N^2 d) and four d -> width -> d MLPs."""
    return 4 * video_tokens * video_tokens * hidden + 4 * (2 * video_tokens * 2 * hidden * width)


def projector_flops_per_position(channels: int, width: int) -> int:
    """One control feature projector per latent position: three spatio-temporal blocks (3x3 and 3x1x1 convs)."""

    def block(cin: int, cout: int) -> int:
        spatial = 2 * 9 * (cin * cout + cout * cout) + (2 * cin * cout if cin != cout else 0)
        return spatial + 2 * 2 * 3 * cout * cout

    return block(channels, width) + block(width, width) + block(width, channels)


def denoise_flops(shape: RunShape, sizes: ModelSizes) -> dict[str, int]:
    """FLOPs of the whole denoising stage, by part (every tile of every clip at every step)."""
    n, d = shape.video_tokens(sizes), sizes.hidden
    length = n + sizes.text_length
    block = dit_block_flops(length, d, sizes.ff_mult)
    per_sample = {"dit": sizes.layers * block, "connectors": 0, "controlnet": 0}
    if shape.controlnet_on:
        per_sample["connectors"] = sizes.layers * connector_flops(n, d, sizes.connector_width)
        per_sample["controlnet"] = sizes.controlnet_layers * block
    calls = shape.tile_calls
    parts = {name: value * shape.cfg * calls for name, value in per_sample.items()}
    # Each evaluation runs both projectors once at batch 1 (twice per tile step with --sequential-cfg).
    positions = shape.latent_frames * shape.tile_latent[0] * shape.tile_latent[1]
    evaluations = shape.cfg // shape.cfg_batch
    projectors = (2 if shape.controlnet_on else 1) * projector_flops_per_position(
        sizes.latent_channels, sizes.projector_width) * positions
    parts["projectors"] = projectors * evaluations * calls
    return parts


def t5_flops(shape: RunShape, sizes: ModelSizes) -> int:
    """T5 on a positive and a negative prompt per tile and clip, 226 tokens each (no mask: all are computed)."""
    tokens, d, inner, ff = sizes.text_length, sizes.t5_dim, sizes.t5_heads * sizes.t5_kv, sizes.t5_ff
    per_layer = 2 * tokens * (4 * d * inner + 3 * d * ff) + 4 * tokens * tokens * inner
    return 2 * shape.tiles * shape.clips * sizes.t5_layers * per_layer


def vae_flops(shape: RunShape, sizes: ModelSizes) -> tuple[int, int]:
    """(encode, decode) FLOPs of all clips, approximated by their 3x3x3 convolutions at each resolution
    (`ModelSizes.vae_*_flops_per_voxel`, per frame pixel of the VAE input) times the tile overlap."""
    frames = shape.clip_frames * shape.clips
    voxels = frames * shape.vae_size[0] * shape.vae_size[1] * sizes.vae_tile_overlap(shape.vae_size)
    return round(voxels * sizes.vae_encode_flops_per_voxel), round(voxels * sizes.vae_decode_flops_per_voxel)


def stage_flops(shape: RunShape, sizes: ModelSizes) -> dict[str, int]:
    """FLOPs per stage: encode (VAE), text (T5), denoise (and its parts), decode (VAE)."""
    encode, decode = vae_flops(shape, sizes)
    denoise = denoise_flops(shape, sizes)
    return {"encode": encode, "text": t5_flops(shape, sizes), "denoise": sum(denoise.values()),
            **{f"denoise.{k}": v for k, v in denoise.items()}, "decode": decode}


# ------------------------------------------------------------------------------------------ estimate


@dataclass(frozen=True)
class RunCost:
    """Everything the planner reports for one offload mode and weight format."""

    shape: RunShape
    offload: str
    weights: str
    flops: dict[str, int]
    device: dict[str, int]  # stage -> peak device bytes
    host: dict[str, int]  # stage -> peak host bytes
    terms: dict[str, int] = field(default_factory=dict)  # the named terms the peaks are sums of

    @property
    def peak_device_bytes(self) -> int:
        return max(self.device.values())

    @property
    def peak_host_bytes(self) -> int:
        return max(self.host.values())

    @property
    def total_flops(self) -> int:
        return sum(v for k, v in self.flops.items() if "." not in k)


def estimate(shape: RunShape, offload: str = "none", weights: str = "bf16", sizes: ModelSizes = ModelSizes()) -> RunCost:
    """The cost of running `shape` with the denoising models placed by `offload` in `weights` format."""
    if offload not in OFFLOAD_ORDER:
        raise UsageError(f"--offload must be one of auto, {', '.join(OFFLOAD_ORDER)}, got {offload!r}")
    if weights not in WEIGHT_FORMATS:
        raise UsageError(f"--weights must be one of {', '.join(WEIGHT_FORMATS)}, got {weights!r}")
    device, terms = device_memory(shape, sizes, offload, weights)
    return RunCost(shape, offload, weights, stage_flops(shape, sizes), device,
                   host_memory(shape, sizes, offload, weights), terms)


def choose_offload(shape: RunShape, budget_bytes: float | None, weights: str = "bf16",
                   sizes: ModelSizes = ModelSizes()) -> RunCost:
    """`--offload auto`: the fastest mode whose peak device memory fits `budget_bytes` (None: no limit).

    Raises UsageError naming the smallest budget that fits when none does.
    """
    costs = [estimate(shape, mode, weights, sizes) for mode in OFFLOAD_ORDER]
    if budget_bytes is None:
        return costs[0]
    for cost in costs:
        if cost.peak_device_bytes <= budget_bytes:
            return cost
    smallest = min(costs, key=lambda c: c.peak_device_bytes)
    raise UsageError(
        f"no offload mode fits {budget_bytes / GIB:.1f} GiB of device memory with --weights {weights}: the smallest, "
        f"--offload {smallest.offload}, needs {smallest.peak_device_bytes / GIB:.1f} GiB "
        f"(try --weights fp8, --sequential-cfg, a smaller --tile-size or --clip-frames)")
