"""`vividvr eval`: per-frame quality of a restored video (docs/metrics.md).

    config = EvalConfig.from_options(output="restored.mp4", ref="clean.mp4", per_frame="frames.csv")
    result = evaluate(config)      # result.summary: the --json object; result.records: per frame
    run_eval(config)               # the command: also writes --per-frame/--plot and prints

Full-reference PSNR/SSIM (RGB and Y) when a reference is given; flow-warping error and flicker
for any video; LPIPS when its weights are given. All videos are decoded once, in step, in
background threads; only the previous frame of each is kept, so memory does not grow with length
(the per-frame numbers, about 100 bytes a frame, are all that accumulates).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console

from vividcli.errors import MediaError, UsageError
from vividcli.media.reader import FrameSource, open_source
from vividcli.progress import QuietReporter, make_reporter
from vividcli.quality.flow import FlowEstimator, TemporalMeter
from vividcli.quality.lpips import load_lpips
from vividcli.quality.metrics import PSNR_CAP_DB, frame_metrics, to_y
from vividcli.quality.report import atomic_write, per_frame_bytes, plot_png, print_table
from vividcli.quality.streams import prefetch, resize_to

__all__ = ["EvalConfig", "EvalResult", "run_eval", "evaluate", "FULL_REFERENCE", "TEMPORAL"]

FULL_REFERENCE = ("psnr", "psnr_y", "ssim", "ssim_y")
TEMPORAL = ("warp_error", "flicker")
PER_FRAME_SUFFIXES = (".csv", ".json")


@dataclass(frozen=True)
class EvalConfig:
    output: Path
    ref: Path | None = None
    input: Path | None = None
    per_frame: Path | None = None
    plot: Path | None = None
    align: bool = False
    lpips_weights: Path | None = None
    fps: str | None = None
    overwrite: bool = False
    json: bool = False
    quiet: bool = False

    @classmethod
    def from_options(cls, *, output, ref=None, input=None, per_frame=None, plot=None, align: bool = False,
                     lpips_weights=None, fps: str | None = None, overwrite: bool = False, json: bool = False,
                     quiet: bool = False) -> EvalConfig:
        """Check the options (UsageError, exit 2); the videos themselves are checked when opened."""
        p = lambda v: None if v is None else Path(v)  # noqa: E731
        config = cls(output=Path(output), ref=p(ref), input=p(input), per_frame=p(per_frame), plot=p(plot),
                     align=align, lpips_weights=p(lpips_weights), fps=fps, overwrite=overwrite, json=json,
                     quiet=quiet)
        if config.per_frame is not None and config.per_frame.suffix.lower() not in PER_FRAME_SUFFIXES:
            raise UsageError(f"--per-frame must name a .csv or .json file, got {config.per_frame}")
        if config.plot is not None and config.plot.suffix.lower() != ".png":
            raise UsageError(f"--plot must name a .png file, got {config.plot}")
        if config.lpips_weights is not None and config.ref is None:
            raise UsageError("--lpips-weights needs --ref (LPIPS compares each frame with the reference)")
        if config.lpips_weights is not None and not config.lpips_weights.is_file():
            raise UsageError(f"--lpips-weights: no such file: {config.lpips_weights}")
        for written in (config.per_frame, config.plot):  # refused like the media writer refuses: exit 1
            if written is not None and written.exists() and not overwrite:
                raise MediaError(f"output exists: {written} (pass --overwrite to replace it, or choose another path)")
        return config


@dataclass
class EvalResult:
    summary: dict
    records: list[dict] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)


@dataclass
class _Plan:
    sources: dict[str, FrameSource]  # role -> source: output, ref, input
    width: int
    height: int
    frames: int
    flow_from: str
    notes: list[str]


def _plan(config: EvalConfig) -> _Plan:
    """Open the videos and decide the common size and length (or refuse a mismatch)."""
    sources = {"output": open_source(config.output, config.fps)}
    for role, path in (("ref", config.ref), ("input", config.input)):
        if path is not None:
            sources[role] = open_source(path, config.fps)
    out, notes = sources["output"].info, []
    width, height = out.width, out.height
    if "ref" in sources:
        ref = sources["ref"].info
        if (ref.width, ref.height) != (width, height):
            if not config.align:
                raise MediaError(f"{config.output} is {width}x{height} but the reference {config.ref} is "
                                 f"{ref.width}x{ref.height}; pass --align to resize it to the reference's size")
            notes.append(f"output resized from {width}x{height} to the reference's {ref.width}x{ref.height}")
            width, height = ref.width, ref.height
    counts = {role: s.info.num_frames for role, s in sources.items()}
    frames = min(counts.values())
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{role} {n}" for role, n in counts.items())
        if not config.align:
            raise MediaError(f"frame counts differ ({listed}); pass --align to compare the first {frames}")
        notes.append(f"frame counts differ ({listed}); compared the first {frames}")
    if "input" in sources and (sources["input"].info.width, sources["input"].info.height) != (width, height):
        notes.append(f"input resized to {width}x{height} to be measured like the output")
    if min(width, height) < 16:
        raise MediaError(f"frames of {width}x{height} are too small to measure (at least 16 pixels a side)")
    flow_from = "ref" if "ref" in sources else "input" if "input" in sources else "output"
    return _Plan(sources, width, height, frames, flow_from, notes)


def _frames(plan: _Plan) -> Iterator[dict[str, np.ndarray]]:
    """One dict of same-size frames (by role) per frame index."""
    streams = {role: prefetch(s.frames(0, plan.frames)) for role, s in plan.sources.items()}
    try:
        for t in range(plan.frames):
            yield {role: resize_to(next(stream), plan.width, plan.height) for role, stream in streams.items()}
    finally:
        for stream in streams.values():
            stream.close()


def _summary(records: list[dict], names: list[str]) -> dict[str, float | None]:
    out = {}
    for name in names:
        values = [r[name] for r in records if r.get(name) is not None]
        out[name] = float(np.mean(values)) if values else None
    return out


def run_eval(config: EvalConfig) -> int:
    """`vividvr eval`: measure, write --per-frame and --plot, print the table and --json; exit code 0."""
    reporter = make_reporter(config.quiet)
    try:
        result = evaluate(config, reporter)
    finally:
        reporter.close()
    if config.per_frame is not None:
        atomic_write(config.per_frame, per_frame_bytes(config.per_frame, result.records, result.fields,
                                                       result.summary), config.overwrite)
    if config.plot is not None:
        atomic_write(config.plot, plot_png(result.records, f"{config.output.name}: per-frame quality"),
                     config.overwrite)
    if config.json:
        print(json.dumps(result.summary), flush=True)
    if not config.quiet:
        print_table(result.summary, Console(stderr=config.json, highlight=False))
    return 0


def _full_reference(role: str, frames: dict, lumas: dict, lpips) -> dict:
    """PSNR/SSIM (and LPIPS) of one video's frame against the reference frame."""
    values = frame_metrics(frames["ref"], frames[role], lumas["ref"], lumas[role])
    if lpips is not None:
        values["lpips"] = lpips(frames["ref"], frames[role])
    for key in ("psnr", "psnr_y"):
        values[key] = min(values[key], PSNR_CAP_DB)
    return values


def evaluate(config: EvalConfig, reporter: QuietReporter | None = None) -> EvalResult:
    """Measure `config.output` (and `config.input`) against `config.ref`, frame by frame.

    The flow of pair (t-1, t) is computed in a worker thread while the main thread measures
    frame t's PSNR and SSIM (OpenCV releases the GIL): the two halves overlap on two cores.
    """
    reporter = reporter or QuietReporter()
    plan = _plan(config)
    lpips = None
    if "ref" in plan.sources:
        lpips, note = load_lpips(config.lpips_weights)
        if note:
            plan.notes.append(note)
    flow = FlowEstimator(plan.width, plan.height)
    roles = [r for r in ("output", "input") if r in plan.sources]
    meters = {role: TemporalMeter() for role in roles}
    records: list[dict] = []
    reporter.start_file(1, 1, config.output.name)
    reporter.stage("eval", plan.frames)
    with ThreadPoolExecutor(1, thread_name_prefix="vividvr-flow") as pool:
        for t, frames in enumerate(_frames(plan)):
            lumas = {role: to_y(frame) for role, frame in frames.items()}
            pending = pool.submit(flow.push, lumas[plan.flow_from])
            # measured while the flow runs; the temporal numbers need the flow first
            full_ref = {role: _full_reference(role, frames, lumas, lpips) if "ref" in frames else {}
                        for role in roles}
            pair = pending.result()
            record: dict = {"frame": t}
            for role in roles:
                prefix = "" if role == "output" else "input_"
                values = {**meters[role].push(frames[role], pair), **full_ref[role]}
                record.update({prefix + k: v for k, v in values.items()})
            records.append(record)
            reporter.advance()
    capped = sum(1 for r in records if r.get("psnr") == PSNR_CAP_DB)
    fields = ["frame"] + [k for k in records[0] if k != "frame"] if records else ["frame"]
    return EvalResult(summary=_make_summary(config, plan, records, capped), records=records, fields=fields)


def _make_summary(config: EvalConfig, plan: _Plan, records: list[dict], capped: int) -> dict:
    names = [*FULL_REFERENCE, *TEMPORAL, "lpips"]
    summary: dict = {"output": str(config.output), "ref": None if config.ref is None else str(config.ref),
                     "frames": plan.frames, "width": plan.width, "height": plan.height, "flow_from": plan.flow_from}
    summary.update(_summary(records, names))
    summary["psnr_cap_db"] = PSNR_CAP_DB
    summary["psnr_capped_frames"] = capped
    if "input" in plan.sources:
        summary["input"] = {"path": str(config.input),
                            **_summary(records, [f"input_{n}" for n in names])}
        summary["input"] = {k.removeprefix("input_"): v for k, v in summary["input"].items()}
    notes = list(plan.notes)
    if capped:
        notes.append(f"{capped} frame(s) identical to the reference: PSNR reported as {PSNR_CAP_DB:g} dB (infinite)")
    summary["notes"] = notes
    return summary
