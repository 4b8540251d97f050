"""`vividvr plan`: what a restoration will cost, from the input's header alone.

    vividvr plan in.mp4                          # table: sizes, tiles, clips, model calls, FLOPs, memory
    vividvr plan in.mp4 --max-vram 24 --json     # the fastest offload mode that fits a 24 GiB GPU, as JSON

It reads the frame count and size (media.probe), plans the run like `restore` (planning/) and costs
it with planning.cost: no weights are loaded and torch is not imported, except to ask a local GPU
for its free memory when `--max-vram` is not given (and only where an NVIDIA driver is installed).
Exit 0 when the run fits, 2 with one line naming the smallest budget that fits when nothing does.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from vividcli.commands.common import Debug, one_line_errors
from vividcli.commands.options import (
    ClipFrames,
    Device,
    Dtype,
    FfChunks,
    Fps,
    Offload,
    SequentialCfg,
    TileSize,
    Upscale,
    Weights,
    check_memory_options,
)
from vividcli.config import OFFLOAD_MODES, RestoreOptions
from vividcli.devices import check_device_name, check_vivid_dtype, dtype_name
from vividcli.errors import UsageError
from vividcli.media.probe import parse_fps, probe
from vividcli.planning.cost import GIB, ModelSizes, RunCost, choose_memory, estimate, run_shape
from vividcli.planning.plan import plan_restoration
from vividcli.runner import plan_jobs

NVIDIA_DRIVER = Path("/proc/driver/nvidia/version")


@dataclass(frozen=True)
class PlanRequest:
    input: Path
    options: RestoreOptions
    offload: str  # auto or a mode
    weights: str
    device: str
    dtype_bytes: int
    budget_bytes: float | None  # None: no budget check
    fps: str | None
    ff_chunks: int = 1  # token slices of the blocks (models/chunking.py); auto may add them


def plan(
    input: Annotated[Path, typer.Argument(help="Video file or image-sequence folder (only its header is read).")],
    upscale: Upscale = 0.0,
    tile_size: TileSize = 128,
    clip_frames: ClipFrames = 121,
    steps: Annotated[int, typer.Option(help="Denoising steps.")] = 50,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale (> 1: two samples per call).")] = 6.0,
    fidelity: Annotated[float, typer.Option(help="ControlNet conditioning scale (0 skips the ControlNet).")] = 1.0,
    color_fix: Annotated[str, typer.Option(help="adain or none (the colour fix runs on the device).")] = "adain",
    offload: Offload = "auto",
    weights: Weights = "bf16",
    sequential_cfg: SequentialCfg = False,
    ff_chunks: FfChunks = 1,
    max_vram: Annotated[Optional[float], typer.Option(
        help="Device memory budget in GiB (a 24 GB card: 24). Default: the free memory of the local GPU; "
             "none on a machine without one.", show_default=False)] = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    fps: Fps = None,
    json_report: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
    debug: Debug = False,
) -> None:
    """Plan a restoration: sizes, tiles, clips, model calls, FLOPs and peak memory, without loading anything."""
    with one_line_errors(debug=debug):
        options = RestoreOptions(upscale=upscale, tile_size=tile_size, clip_frames=clip_frames, steps=steps,
                                 guidance=guidance, fidelity=fidelity, color_fix=color_fix,
                                 sequential_cfg=sequential_cfg)
        request = build_request(input, options, offload, weights, max_vram, device, dtype, fps, ff_chunks)
        report = plan_report(request)
        print_report(report, json_report)


def build_request(input: Path, options: RestoreOptions, offload: str, weights: str, max_vram: float | None,
                  device: str, dtype: str, fps: str | None, ff_chunks: int = 1) -> PlanRequest:
    """Every option checked (UsageError, exit 2) before the input is read."""
    check_memory_options(offload, weights, ff_chunks)
    if max_vram is not None and not max_vram > 0:
        raise UsageError(f"--max-vram must be a positive number of GiB, got {max_vram}")
    check_device_name(device)
    name = dtype_name(dtype)
    check_vivid_dtype(name)
    if fps is not None:
        parse_fps(fps, UsageError)
    on_gpu = device != "cpu"  # auto plans for a GPU: the planner is for the machine that will restore
    dtype_bytes = 4 if name == "float32" or (name == "auto" and not on_gpu) else 2
    budget = max_vram * GIB if max_vram is not None else local_free_memory(device)
    return PlanRequest(input, options, offload, weights, device, dtype_bytes, budget, fps, max(ff_chunks, 1))


def local_free_memory(device: str) -> float | None:
    """Free bytes of the local GPU `device` names, or None (CPU, or no NVIDIA driver: torch stays unloaded)."""
    if device == "cpu" or not NVIDIA_DRIVER.exists():
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info(torch.device("cuda" if device == "auto" else device))
    return float(free)


def plan_report(request: PlanRequest) -> dict:
    """The plan of `request` as one JSON-ready dict; UsageError when no mode fits the budget."""
    info = probe(request.input, request.fps)
    plan = plan_restoration(info.num_frames, info.height, info.width, request.options)
    shape = run_shape(plan, request.options, request.dtype_bytes)
    if request.offload == "auto":  # the fastest that fits, adding token chunking and sequential CFG if needed
        cost = choose_memory(shape, request.budget_bytes, request.weights, "auto", request.options.sequential_cfg,
                             request.ff_chunks).cost
    else:
        cost = estimate(shape, request.offload, request.weights, ff_chunks=request.ff_chunks)
        check_fits(cost, request.budget_bytes)
    modes = {mode: estimate(shape, mode, request.weights, ff_chunks=request.ff_chunks).peak_device_bytes
             for mode in OFFLOAD_MODES if mode != "auto"}
    return as_json(request, info, cost, modes)


def check_fits(cost: RunCost, budget: float | None) -> None:
    if budget is not None and cost.peak_device_bytes > budget:
        raise UsageError(f"--offload {cost.offload} needs {cost.peak_device_bytes / GIB:.1f} GiB of device memory, "
                         f"more than the {budget / GIB:.1f} GiB budget; --offload auto picks the fastest mode that fits")


def as_json(request: PlanRequest, info, cost: RunCost, modes: dict[str, int]) -> dict:
    shape = cost.shape
    return {
        "input": str(request.input), "frames": shape.frames, "input_size": [info.height, info.width],
        "output_size": list(shape.output_size), "tiles": shape.tiles, "clips": shape.clips, "steps": shape.steps,
        "tile_calls": shape.tile_calls, "model_calls": shape.model_calls, "cfg_batch": shape.cfg_batch,
        "sequential_cfg": shape.cfg_batch < shape.cfg, "ff_chunks": cost.ff_chunks,
        "video_tokens_per_tile": shape.video_tokens(ModelSizes()),
        "offload": cost.offload, "offload_requested": request.offload, "weights": cost.weights,
        "dtype_bytes": shape.dtype_bytes, "flops": {**cost.flops, "total": cost.total_flops},
        "peak_device_bytes": cost.peak_device_bytes, "peak_host_bytes": cost.peak_host_bytes,
        "per_stage": cost.device, "per_stage_host": cost.host, "budget_bytes": request.budget_bytes,
        "peak_device_bytes_by_mode": modes, "terms": cost.terms,
    }


def print_report(report: dict, as_json_object: bool) -> None:
    if as_json_object:
        typer.echo(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(100, os.get_terminal_size(0).columns if os.isatty(0) else 100))
    h, w = report["output_size"]
    console.print(f"[bold]{report['input']}[/]: {report['frames']} frames {report['input_size'][0]}x"
                  f"{report['input_size'][1]} -> {h}x{w}; {count(report['clips'], 'clip')} x "
                  f"{count(report['tiles'], 'tile')} x {count(report['steps'], 'step')} = {report['model_calls']:,} "
                  f"model calls (CFG batch {report['cfg_batch']})")
    chosen = " (auto: the fastest that fits)" if report["offload_requested"] == "auto" else ""
    extras = (f" --ff-chunks {report['ff_chunks']}" if report["ff_chunks"] > 1 else "") + (
        " --sequential-cfg" if report["sequential_cfg"] else "")
    table = Table("stage", "FLOPs", "peak device", "peak host", title=f"--offload {report['offload']}{chosen} "
                  f"--weights {report['weights']}{extras}")
    for stage, device_bytes in report["per_stage"].items():
        flops = report["flops"].get(stage)
        table.add_row(stage, f"{flops:.3g}" if flops else "", gib(device_bytes), gib(report["per_stage_host"][stage]))
    table.add_row("total", f"{report['flops']['total']:.3g}", gib(report["peak_device_bytes"]),
                  gib(report["peak_host_bytes"]), style="bold")
    console.print(table)
    budget = report["budget_bytes"]
    modes = ", ".join(f"{mode} {gib(peak)}" for mode, peak in report["peak_device_bytes_by_mode"].items())
    console.print(f"peak device memory by mode: {modes}; budget: {gib(budget) if budget else 'none (no GPU here)'}")


def count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def gib(value: float) -> str:
    return f"{value / GIB:.2f} GiB"


def dry_run_plans(inputs: list[Path], output: str, *, engine: str, options: RestoreOptions, offload: str,
                  weights: str, device: str, dtype: str, fps: str | None, recursive: bool, json_report: bool,
                  ff_chunks: int = 1) -> int:
    """`vividvr restore --dry-run`: the plan of every input of the batch (as `vividvr plan` prints it)."""
    if engine != "vivid":
        raise UsageError(f"--dry-run plans the vivid engine's runs; --engine {engine} has nothing to plan")
    jobs = plan_jobs(list(inputs), output, recursive=recursive)
    reports = [plan_report(build_request(job.input, options, offload, weights, None, device, dtype, fps, ff_chunks))
               for job in jobs]
    if json_report:
        typer.echo(json.dumps({"plans": reports, "exit_code": 0}, indent=2))
    for report in [] if json_report else reports:
        print_report(report, False)
    return 0
