"""Where the models live while a restoration runs: offload modes built on diffusers' own machinery.

Every mode keeps the weights on the host and brings each model to the compute device only for its
stage: T5 while the prompts are encoded, the VAE while clips are encoded or decoded. They differ in
how the denoising models (transformer with its connectors, ControlNet) are placed:

    none        on the device for the whole run (fastest; the most device memory)
    model       on the device for the denoising stage only, both at once (diffusers' model-offload
                pattern, stage by stage: encode and decode never share the device with them)
    group       diffusers group offloading, one block at a time (`apply_group_offloading`,
                block_level, with CUDA streams to overlap the transfers with compute)
    sequential  diffusers group offloading of every leaf layer (least memory, slowest)

On a CPU device every mode computes the same numbers (only where the weights sit differs).

`weights="fp8"` stores the denoising models' weights as float8_e4m3fn and casts each layer to the
compute dtype when it runs (diffusers' layerwise casting; embeddings, norms and the control feature
projector stay in the compute dtype): half the weight memory, slightly different outputs.

`ff_chunks=N` (> 1) runs every DiT and ControlNet block's feed-forward and rotary embedding on N slices
of the tokens (models/chunking.py): less activation memory, the same numbers up to summation order.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from vividcli.config import OFFLOAD_MODES, WEIGHT_FORMATS, RestoreOptions
from vividcli.models.chunking import enable_token_chunking
from vividcli.planning.cost import MemoryChoice, choose_memory, run_shape
from vividcli.planning.plan import RestorePlan, plan_restoration

HOST = torch.device("cpu")


def resolve_memory(offload: str, device: torch.device | str, plan: RestorePlan, options: RestoreOptions,
                   weights: str = "bf16", ff_chunks: int = 1, dtype: torch.dtype = torch.bfloat16,
                   budget_bytes: float | None = None, strict: bool = True) -> MemoryChoice:
    """The settings a run of `plan` uses: `offload` auto becomes, on CUDA, the fastest mode (adding token
    chunking, then sequential CFG, where needed) whose planned peak fits `budget_bytes` (default: the
    device's free memory now) — `planning.cost.choose_memory`; on the CPU, none. An explicit mode keeps
    the given settings. UsageError when nothing fits (`strict`; else the smallest, `fits=False`)."""
    device = torch.device(device)
    shape = run_shape(plan, options, dtype_bytes=torch.finfo(dtype).bits // 8)
    if offload == "auto" and device.type != "cuda":
        offload = "none"
    if offload != "auto":
        return choose_memory(shape, None, weights, offload, options.sequential_cfg, ff_chunks)
    if budget_bytes is None:
        budget_bytes, _total = torch.cuda.mem_get_info(device)
    return choose_memory(shape, budget_bytes, weights, "auto", options.sequential_cfg, ff_chunks, strict=strict)


def resolve_offload(mode: str, device: torch.device | str, weights: str = "bf16") -> str:
    """`auto`: none on the CPU; on CUDA the fastest mode whose planned peak for the paper's setting (121
    frames at 1024 x 1820, default options) fits the device's free memory, by itself or with token
    chunking and sequential CFG (else sequential). `resolve_memory` plans for the real input."""
    if mode != "auto" or torch.device(device).type != "cuda":
        return mode if mode != "auto" else "none"
    options = RestoreOptions()
    plan = plan_restoration(121, 1024, 1820, options)
    return resolve_memory(mode, device, plan, options, weights, strict=False).offload


@contextmanager
def on_device(module: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """`module` on `device` for the block, back on the host after (nothing moves on a CPU device)."""
    module.to(device)
    try:
        yield module
    finally:
        if device != HOST:
            module.to(HOST)
            torch.cuda.empty_cache()


class Placement:
    """Applies an offload mode to the denoising models and moves the stage models in and out."""

    def __init__(self, denoisers: tuple[nn.Module, ...], device: torch.device | str, mode: str = "none",
                 weights: str = "bf16", ff_chunks: int = 1):
        if mode not in OFFLOAD_MODES or mode == "auto":
            raise ValueError(f"offload mode must be one of none, model, group, sequential; got {mode!r}")
        if weights not in WEIGHT_FORMATS:
            raise ValueError(f"weights must be one of {', '.join(WEIGHT_FORMATS)}; got {weights!r}")
        self.denoisers, self.device, self.mode, self.weights = denoisers, torch.device(device), mode, weights
        self.ff_chunks = 1
        self.set_ff_chunks(ff_chunks)
        for module in denoisers:
            if weights == "fp8":  # before offloading: the hooks then move the fp8 copies
                module.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=module.dtype)
            if mode == "none":
                module.to(self.device)
            elif mode in ("group", "sequential"):
                self._apply_group_offloading(module)

    def set_ff_chunks(self, chunks: int) -> None:
        """Run the denoising blocks' feed-forward and rotary embedding in `chunks` token slices (<= 1: off);
        can change between runs (the weights stay where they are)."""
        if not isinstance(chunks, int) or chunks < 0:
            raise ValueError(f"ff_chunks must be a whole number >= 0 (0 or 1: off), got {chunks!r}")
        for module in self.denoisers:
            enable_token_chunking(module, chunks)
        self.ff_chunks = max(chunks, 1)

    def _apply_group_offloading(self, module: nn.Module) -> None:
        from diffusers.hooks import apply_group_offloading

        streams = self.device.type == "cuda"  # transfers overlap compute only with CUDA streams
        if self.mode == "group":
            apply_group_offloading(module, onload_device=self.device, offload_device=HOST, offload_type="block_level",
                                   num_blocks_per_group=1, use_stream=streams)
        else:
            apply_group_offloading(module, onload_device=self.device, offload_device=HOST, offload_type="leaf_level",
                                   use_stream=False)

    @contextmanager
    def stage(self, module: nn.Module) -> Iterator[nn.Module]:
        """A stage model (T5, VAE) on the device for its stage."""
        with on_device(module, self.device):
            yield module

    @contextmanager
    def denoising(self) -> Iterator[None]:
        """The denoising models ready to run (in `model` mode: brought in now, sent back after)."""
        if self.mode != "model":
            yield
            return
        for module in self.denoisers:
            module.to(self.device)
        try:
            yield
        finally:
            if self.device != HOST:
                for module in self.denoisers:
                    module.to(HOST)
                torch.cuda.empty_cache()

    def host_storage(self, tensor: torch.Tensor) -> torch.Tensor:
        """A host copy of `tensor` for state kept between a clip's turns (pinned when a GPU is used,
        so the copies to and from the device are fast and can overlap compute)."""
        if self.device == HOST:
            return tensor  # nothing to move: the state is already where it is computed
        host = tensor.detach().to(HOST, copy=True)
        return host.pin_memory() if self.device.type == "cuda" else host
