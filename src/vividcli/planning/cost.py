"""What a restoration will cost before it runs: model calls, FLOPs per stage, peak memory per offload mode.

    shape = run_shape(plan, options)                       # clips, tiles, steps, tokens, sizes
    cost = estimate(shape, offload="model", weights="fp8")  # flops, device and host bytes per stage
    best = choose_offload(shape, budget_bytes=24e9)         # the fastest mode that fits (UsageError if none)
    pick = choose_memory(shape, budget_bytes=24e9)          # the same, adding --ff-chunks / --sequential-cfg

Pure arithmetic on a `RestorePlan` and the model sizes (`ModelSizes`; defaults are the official
CogVideoX1.5-5B / Vivid-VR / T5-XXL / CogVideoX VAE values): no torch, no weights, no device. The
formulas and where each constant comes from are in docs/planning.md ("Cost model"); the memory terms
reproduce the simulated GPU of `benchmarks/vram_dry_run.py` (docs/benchmarks.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from vividcli.errors import UsageError
from vividcli.planning.memory import device_memory, host_memory
from vividcli.planning.sizes import ModelSizes, RunShape, run_shape

OFFLOAD_ORDER = ("none", "model", "group", "sequential")  # fastest first
# The token slices `--offload auto` runs the blocks in when that is what fits (models/chunking.py): 8 brings
# the rotary embedding's slice below the attention's own peak at the paper's setting (docs/planning.md).
AUTO_FF_CHUNKS = 8
WEIGHT_FORMATS = ("bf16", "fp8")
GIB = 2**30
__all__ = ["ModelSizes", "RunShape", "run_shape", "RunCost", "estimate", "choose_offload", "stage_flops",
           "OFFLOAD_ORDER", "WEIGHT_FORMATS", "MemoryChoice", "choose_memory", "memory_candidates", "AUTO_FF_CHUNKS"]


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
    ff_chunks: int = 1  # token slices of the blocks' feed-forward and rotary embedding (1: stock)

    @property
    def peak_device_bytes(self) -> int:
        return max(self.device.values())

    @property
    def peak_host_bytes(self) -> int:
        return max(self.host.values())

    @property
    def total_flops(self) -> int:
        return sum(v for k, v in self.flops.items() if "." not in k)


def estimate(shape: RunShape, offload: str = "none", weights: str = "bf16", sizes: ModelSizes = ModelSizes(),
             ff_chunks: int = 1) -> RunCost:
    """The cost of running `shape` with the denoising models placed by `offload` in `weights` format, their
    blocks in `ff_chunks` token slices (models/chunking.py; <= 1: stock)."""
    if offload not in OFFLOAD_ORDER:
        raise UsageError(f"--offload must be one of auto, {', '.join(OFFLOAD_ORDER)}, got {offload!r}")
    if weights not in WEIGHT_FORMATS:
        raise UsageError(f"--weights must be one of {', '.join(WEIGHT_FORMATS)}, got {weights!r}")
    ff_chunks = max(ff_chunks, 1)
    device, terms = device_memory(shape, sizes, offload, weights, ff_chunks)
    return RunCost(shape, offload, weights, stage_flops(shape, sizes), device,
                   host_memory(shape, sizes, offload, weights), terms, ff_chunks)


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


# ------------------------------------------------------------------------------------ auto choice


@dataclass(frozen=True)
class MemoryChoice:
    """How to run: offload mode, CFG halves one after another or not, token slices of the blocks."""

    offload: str
    sequential_cfg: bool
    ff_chunks: int
    cost: RunCost  # the planned cost with these settings
    fits: bool = True  # whether its peak fits the budget it was chosen for

    def describe(self) -> str:
        extras = [f"--ff-chunks {self.ff_chunks}"] * (self.ff_chunks > 1) + ["--sequential-cfg"] * self.sequential_cfg
        return " ".join([f"--offload {self.offload}", *extras])


def memory_candidates(offload: str = "auto", sequential_cfg: bool = False, ff_chunks: int = 1) -> list[tuple[str, bool, int]]:
    """(offload, sequential CFG, FF chunks) that `--offload auto` tries, fastest first: the modes in
    OFFLOAD_ORDER, each first as asked, then with the blocks in AUTO_FF_CHUNKS token slices (no change to
    the numbers beyond summation order, nor to the job's cache key), then with the CFG halves one after
    another, then both. What the user set (`--sequential-cfg`, `--ff-chunks N`) is kept; an explicit
    `offload` mode is the only candidate."""
    if offload != "auto":
        return [(offload, sequential_cfg, max(ff_chunks, 1))]
    chunk_options = (ff_chunks,) if ff_chunks > 1 else (1, AUTO_FF_CHUNKS)
    cfg_options = (True,) if sequential_cfg else (False, True)
    return [(mode, sequential, chunks) for mode in OFFLOAD_ORDER
            for sequential in cfg_options for chunks in chunk_options]


def choose_memory(shape: RunShape, budget_bytes: float | None, weights: str = "bf16", offload: str = "auto",
                  sequential_cfg: bool = False, ff_chunks: int = 1, sizes: ModelSizes = ModelSizes(),
                  strict: bool = True) -> MemoryChoice:
    """The first of `memory_candidates` whose planned peak device memory fits `budget_bytes` (None: no limit).

    `shape` may have been planned with or without sequential CFG: each candidate sets its own. When none
    fits: UsageError naming the smallest budget that does (`strict`), or the candidate with the smallest
    peak, marked `fits=False`.
    """
    choices = []
    for mode, sequential, chunks in memory_candidates(offload, sequential_cfg, ff_chunks):
        batch = 1 if sequential else shape.cfg
        cost = estimate(dataclasses.replace(shape, cfg_batch=batch), mode, weights, sizes, chunks)
        choice = MemoryChoice(mode, sequential and shape.cfg > 1, chunks, cost)
        if budget_bytes is None or cost.peak_device_bytes <= budget_bytes:
            return choice
        choices.append(choice)
    smallest = min(choices, key=lambda c: c.cost.peak_device_bytes)
    if not strict:
        return dataclasses.replace(smallest, fits=False)
    raise UsageError(
        f"nothing fits {budget_bytes / GIB:.1f} GiB of device memory with --weights {weights}: the smallest, "
        f"{smallest.describe()}, needs {smallest.cost.peak_device_bytes / GIB:.1f} GiB "
        f"(try{' --weights fp8,' if weights != 'fp8' else ''} a smaller --tile-size or --clip-frames)")
