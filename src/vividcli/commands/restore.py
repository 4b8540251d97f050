"""`vividvr restore`: the command line becomes one validated `RestoreRequest`, then the batch runs.

Every option is checked by `build_request` before any input is opened and before torch is
imported, so a typo costs well under a second (exit 2).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Optional

import typer

from vividcli.commands.common import Debug, one_line_errors
from vividcli.commands.options import (
    CacheDir,
    Captioner,
    CkptDir,
    ClipFrames,
    Device,
    Dtype,
    FfChunks,
    Fps,
    Offload,
    SequentialCfg,
    TileSize,
    TrustRemoteCode,
    Upscale,
    Weights,
    check_memory_options,
)
from vividcli.commands.plan import dry_run_plans
from vividcli.config import SR_TILE_OVERLAP, RestoreOptions
from vividcli.devices import check_device_name, check_vivid_dtype, dtype_name, local_rank_device, resolve_device
from vividcli.engines.build import EngineSpec, checkpoint_dir, engine_factory, serve_as_worker
from vividcli.errors import UsageError, error_line
from vividcli.interrupt import GracefulInterrupt, Interrupted
from vividcli.media.codecs import check_encoding
from vividcli.media.probe import parse_fps
from vividcli.parallel import join_group, launcher_world
from vividcli.progress import make_reporter
from vividcli.runner import EncodeOptions, Job, plan_jobs, run_batch, select_shard, summary_line
from vividcli.stages.caption_file import load_captions_file

ENGINES = ("vivid", "classic", "realesrgan")
WHOLE = re.compile("[0-9]+")  # ASCII digits only (str.isdigit also takes superscripts, which int() refuses)


@dataclass(frozen=True)
class RestoreRequest:
    """A whole `vividvr restore` run: what to restore into what, with which engine, how to write it."""

    jobs: tuple[Job, ...]
    engine: EngineSpec
    encode: EncodeOptions
    fps: Fraction | None  # of image-sequence inputs
    overwrite: bool
    quiet: bool
    json_report: bool
    shard: tuple[int, int] | None = None  # (K, N) of --shard K/N or --batch-parallel: only K's share of the jobs
    planned: int = 0  # jobs before the shard was taken
    ranks: tuple[int, int] | None = None  # (rank, world size) of a step-parallel job under a launcher


def restore(
    inputs: Annotated[list[Path], typer.Argument(help="Video files, image-sequence folders, or folders of videos.")],
    output: Annotated[str, typer.Option("-o", "--output", help="Output file (single input) or folder (several "
                                        "inputs, or a name ending in /). A name without extension is a folder "
                                        "of PNG frames.")],
    engine: Annotated[str, typer.Option(help="vivid: Vivid-VR (needs checkpoints). classic: a deterministic "
                                        "weight-free restorer (denoise + Lanczos + unsharp), not a neural model. "
                                        "realesrgan: frame-wise super-resolution with --sr-model (a fast baseline).")] = "vivid",
    ckpt_dir: CkptDir = None,
    caption: Annotated[Optional[str], typer.Option(help="One caption for every clip and tile (no captioner is run).")] = None,
    captions_file: Annotated[Optional[Path], typer.Option(help="JSON: per clip, per tile captions "
                                                          "(as written by `vividvr caption`; no captioner is run).")] = None,
    captioner: Captioner = None,
    trust_remote_code: TrustRemoteCode = False,
    upscale: Upscale = 0.0,
    tile_size: TileSize = 128,
    clip_frames: ClipFrames = 121,
    steps: Annotated[int, typer.Option(help="Denoising steps (DPM-solver; vivid engine).")] = 50,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale (vivid engine).")] = 6.0,
    dynamic_cfg: Annotated[bool, typer.Option(help="Vary the guidance scale over the steps with CogVideoX's "
                                              "dynamic-CFG formula, computed as the reference does "
                                              "(docs/architecture.md; vivid engine).")] = False,
    seed: Annotated[int, typer.Option(help="Random seed of the initial noise and the solver (vivid engine).")] = 42,
    restoration_guidance: Annotated[float, typer.Option(
        help="Restoration-guided sampling exponent s (e.g. 1.5; <= 0: off): each step's clean estimate is "
             "pulled towards the encoded input by (t/1000)^s, so a larger s pulls less (more realistic), a smaller "
             "s more (closer to the input). Vivid engine.")] = -1.0,
    fidelity: Annotated[float, typer.Option(
        help="γ, CreativeVR's precision knob: scales everything Vivid-VR injects into the frozen CogVideoX DiT (the "
             "control patch embedding and each connector's residual). 1 = as trained (the paper); 0 = the plain "
             "CogVideoX text-to-video prior (the ControlNet is not run); values in between interpolate. Values "
             "other than 1 are outside what the model was trained with. Vivid engine.")] = 1.0,
    color_fix: Annotated[str, typer.Option(help="adain: match each output frame's per-channel mean and standard "
                                           "deviation to the upscaled input frame; none. Vivid engine.")] = "adain",
    textfix: Annotated[bool, typer.Option(help="Put back legible text: text regions (EasyOCR's CRAFT) come from the "
                                          "Real-ESRGAN-enhanced input (needs the textfix extra; docs/textfix.md).")] = False,
    sr_model: Annotated[Optional[Path], typer.Option(help="Super-resolution model file (any spandrel-loadable, e.g. "
                                                     "RealESRGAN_x4plus.pth) for --engine realesrgan and --textfix; "
                                                     "default <ckpt-dir>/RealESRGAN/RealESRGAN_x2plus.pth.")] = None,
    sr_tile: Annotated[int, typer.Option(help="Tile size of the super-resolution model in input pixels "
                                         "(0: whole frames; smaller saves GPU memory).")] = 512,
    device: Device = "auto",
    dtype: Dtype = "auto",
    offload: Offload = "auto",
    weights: Weights = "bf16",
    sequential_cfg: SequentialCfg = False,
    ff_chunks: FfChunks = 1,
    fps: Fps = None,
    recursive: Annotated[bool, typer.Option(help="Look for videos in subfolders of input folders.")] = False,
    shard: Annotated[Optional[str], typer.Option(
        help="K/N: restore only the K-th of N shares of the inputs (1 <= K <= N), so that N processes started "
             "with the same command and K = 1..N do every input exactly once (docs/distributed.md).")] = None,
    batch_parallel: Annotated[bool, typer.Option(
        help="Under torchrun or another launcher that sets RANK and WORLD_SIZE: --shard RANK+1/WORLD_SIZE, "
             "on GPU cuda:LOCAL_RANK with --device auto or cuda (docs/distributed.md).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Redo inputs whose output already exists.")] = False,
    codec: Annotated[Optional[str], typer.Option(help="libx264 (default), libx265, prores, ffv1, or png "
                                                 "(a folder of PNG frames).")] = None,
    crf: Annotated[Optional[int], typer.Option(help="x264/x265 quality, 0-51, lower is better (default 18 for "
                                               "libx264, 20 for libx265).")] = None,
    preset: Annotated[Optional[str], typer.Option(help="x264/x265 speed preset (default medium).")] = None,
    pix_fmt: Annotated[Optional[str], typer.Option(help="Output pixel format (default from codec and input bit depth).")] = None,
    save_frames: Annotated[Optional[Path], typer.Option(help="Also write the frames as PNGs into this folder "
                                                        "(with several inputs, one subfolder per input).")] = None,
    no_audio: Annotated[bool, typer.Option("--no-audio", help="Drop audio (subtitles and data are still copied).")] = False,
    cache_dir: CacheDir = None,
    no_resume: Annotated[bool, typer.Option("--no-resume", help="Denoise from the start even if a cached job "
                                            "exists (its cached model captions are still used).")] = False,
    checkpoint_every: Annotated[int, typer.Option(help="Save the denoising state to the job cache every N steps "
                                                  "(and always after the last step and on Ctrl-C).")] = 1,
    keep_cache: Annotated[bool, typer.Option(help="Keep a finished job's denoising state and conditioning in the "
                                             "cache (by default only its small JSON entries, such as model "
                                             "captions, are kept).")] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Print only errors (no progress, no warnings).")] = False,
    json_report: Annotated[bool, typer.Option("--json", help="Print a JSON report on stdout at the end.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Vivid engine: print what each input would cost "
                                          "(sizes, model calls, FLOPs, peak memory per offload mode; as `vividvr "
                                          "plan`) and stop: nothing is loaded or written.")] = False,
    debug: Debug = False,
) -> None:
    """Restore videos or image sequences."""

    def report_error(message: str, code: int) -> None:  # scripts parse stdout whatever happened
        if json_report:
            typer.echo(json.dumps({"results": [], "exit_code": code, "error": message}, indent=2))

    with one_line_errors(debug=debug, on_error=report_error):
        options = RestoreOptions(
            upscale=upscale, tile_size=tile_size, clip_frames=clip_frames, steps=steps, guidance=guidance,
            dynamic_cfg=dynamic_cfg, seed=seed, restoration_guidance=restoration_guidance, fidelity=fidelity,
            color_fix=color_fix, sequential_cfg=sequential_cfg)
        if dry_run:
            raise typer.Exit(dry_run_plans(inputs, output, engine=engine, options=options, offload=offload,
                                           weights=weights, device=device, dtype=dtype, fps=fps, recursive=recursive,
                                           json_report=json_report, ff_chunks=ff_chunks))
        request = build_request(
            inputs=inputs, output=output, engine=engine, options=options, ckpt_dir=ckpt_dir, caption=caption,
            captions_file=captions_file, captioner=captioner, trust_remote_code=trust_remote_code,
            textfix=textfix, sr_model=sr_model, sr_tile=sr_tile, device=device, dtype=dtype, offload=offload, weights=weights,
            ff_chunks=ff_chunks, fps=fps, shard=shard, batch_parallel=batch_parallel,
            recursive=recursive, overwrite=overwrite, codec=codec, crf=crf, preset=preset, pix_fmt=pix_fmt,
            save_frames=save_frames, no_audio=no_audio, cache_dir=cache_dir, no_resume=no_resume,
            checkpoint_every=checkpoint_every, keep_cache=keep_cache, quiet=quiet, json_report=json_report)
        code = run(request)
    raise typer.Exit(code)


def build_request(
    *, inputs: list[Path], output: str, engine: str, options: RestoreOptions, ckpt_dir: Path | None,
    caption: str | None, captions_file: Path | None, captioner: str | None, trust_remote_code: bool,
    textfix: bool, sr_model: Path | None, sr_tile: int, device: str, dtype: str, offload: str, weights: str,
    fps: str | None, shard: str | None = None, batch_parallel: bool = False, ff_chunks: int = 1,
    environ: Mapping[str, str] | None = None,
    recursive: bool, overwrite: bool, codec: str | None, crf: int | None, preset: str | None,
    pix_fmt: str | None, save_frames: Path | None, no_audio: bool, cache_dir: Path | None, no_resume: bool,
    checkpoint_every: int, keep_cache: bool, quiet: bool, json_report: bool,
) -> RestoreRequest:
    """Validate every option in one place: usage errors exit 2 before any input is opened or torch loaded."""
    if engine not in ENGINES:
        raise UsageError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    check_caption_options(caption=caption, captions_file=captions_file, captioner=captioner)
    check_sr_options(engine=engine, textfix=textfix, sr_model=sr_model, sr_tile=sr_tile)
    if checkpoint_every < 1:
        raise UsageError(f"--checkpoint-every must be at least 1, got {checkpoint_every}")
    check_device_name(device)
    dtype = dtype_name(dtype)
    if engine == "vivid":
        check_vivid_dtype(dtype)
    check_memory_options(offload, weights, ff_chunks)
    environ = os.environ if environ is None else environ  # the launcher's RANK, WORLD_SIZE, LOCAL_RANK
    share = batch_shard(shard, batch_parallel, environ)
    # Under a launcher the vivid engine shares each video's denoising steps between the processes
    # (step-parallel), unless --batch-parallel gives each process its own inputs instead.
    ranks = launcher_world(environ) if engine == "vivid" and not batch_parallel else None
    frame_rate = parse_fps(fps, UsageError) if fps is not None else None
    encode = EncodeOptions(codec=None if codec == "png" else codec, crf=crf, preset=preset, pix_fmt=pix_fmt,
                           copy_audio=not no_audio)
    jobs = plan_jobs(list(inputs), output, recursive=recursive, codec=codec, save_frames=save_frames)
    check_encode_options(encode, jobs, save_frames)
    planned = len(jobs)
    if share is not None:
        jobs = select_shard(jobs, *share)
    if engine == "classic" and not textfix:
        device = "cpu"  # weight-free: nothing to put on a GPU
    elif batch_parallel or ranks is not None:
        device = local_rank_device(device, local_rank(environ))
    spec = EngineSpec(
        engine=engine, options=options, ckpt_dir=ckpt_dir, caption=caption, captions_file=captions_file,
        captioner=captioner, trust_remote_code=trust_remote_code, device=device, dtype=dtype, textfix=textfix,
        sr_model=sr_model, sr_tile=sr_tile, cache_dir=cache_dir, resume=not no_resume,
        checkpoint_every=checkpoint_every, keep_cache=keep_cache, offload=offload, weights=weights,
        ff_chunks=max(ff_chunks, 1), outputs={str(job.input): str(job.output) for job in jobs})
    if device.startswith("cuda"):
        resolve_device(device)  # CUDA asked for by name: is there one? (imports torch, which it needs anyway)
    if engine == "vivid":
        checkpoint_dir(spec)  # a wrong --ckpt-dir fails now, before any input is opened
    return RestoreRequest(jobs=tuple(jobs), engine=spec, encode=encode, fps=frame_rate, overwrite=overwrite,
                          quiet=quiet, json_report=json_report, shard=share, planned=planned, ranks=ranks)


def parse_shard(text: str) -> tuple[int, int]:
    """`--shard K/N` as (K, N), 1 <= K <= N."""
    match = re.fullmatch(r" *([0-9]+) */ *([0-9]+) *", text)
    if match is None or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise UsageError(f"--shard must be K/N with 1 <= K <= N (e.g. --shard 2/4), got {text!r}")
    return int(match.group(1)), int(match.group(2))


def batch_shard(shard: str | None, batch_parallel: bool, environ: Mapping[str, str]) -> tuple[int, int] | None:
    """The (K, N) share of the inputs this process restores: --shard K/N, or RANK+1/WORLD_SIZE under a launcher."""
    if not batch_parallel:
        return None if shard is None else parse_shard(shard)
    if shard is not None:
        raise UsageError("--batch-parallel takes the shard from RANK and WORLD_SIZE; use either it or --shard, "
                         "not both")
    missing = [name for name in ("RANK", "WORLD_SIZE") if name not in environ]
    if missing:
        raise UsageError(f"--batch-parallel needs RANK and WORLD_SIZE, which launchers such as torchrun set, but "
                         f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set; without a "
                         "launcher use --shard K/N")
    rank, world = environ["RANK"].strip(), environ["WORLD_SIZE"].strip()
    if not (WHOLE.fullmatch(rank) and WHOLE.fullmatch(world) and int(rank) < int(world)):
        raise UsageError(f"--batch-parallel needs whole numbers 0 <= RANK < WORLD_SIZE, got RANK={rank!r} "
                         f"WORLD_SIZE={world!r}")
    return int(rank) + 1, int(world)


def local_rank(environ: Mapping[str, str]) -> int:
    """This process's GPU on its node under a launcher: LOCAL_RANK (0 where the launcher does not set it)."""
    value = environ.get("LOCAL_RANK", "0").strip()
    if not WHOLE.fullmatch(value):
        raise UsageError(f"LOCAL_RANK must be a whole number (as launchers set it), got {value!r}")
    return int(value)


def check_caption_options(*, caption: str | None, captions_file: Path | None, captioner: str | None) -> None:
    """At most one caption source; a captions file is read and checked now (its counts per input later)."""
    given = [flag for flag, value in (("--caption", caption), ("--captions-file", captions_file),
                                      ("--captioner", captioner)) if value is not None]
    if len(given) > 1:
        raise UsageError(f"use either --caption, --captions-file or --captioner, not several: {', '.join(given)}")
    if captions_file is not None:
        load_captions_file(captions_file)


def check_sr_options(*, engine: str, textfix: bool, sr_model: Path | None, sr_tile: int) -> None:
    """The super-resolution options (--textfix, --sr-model, --sr-tile) fit the engine."""
    if textfix and engine == "realesrgan":
        raise UsageError("--textfix takes text from Real-ESRGAN's output, which --engine realesrgan already is; "
                         "drop --textfix")
    if sr_model is not None and engine != "realesrgan" and not textfix:
        raise UsageError("--sr-model is used by --engine realesrgan and --textfix; add one of them or drop it")
    if sr_model is not None and not Path(sr_model).is_file():
        raise UsageError(f"super-resolution model {sr_model} does not exist")
    if sr_tile < 0 or 0 < sr_tile <= 2 * SR_TILE_OVERLAP:
        raise UsageError(f"--sr-tile must be 0 (whole frames) or a tile size above {2 * SR_TILE_OVERLAP} pixels, "
                         f"got {sr_tile}")


def check_encode_options(encode: EncodeOptions, jobs: list[Job], save_frames: Path | None) -> None:
    """Encoder options against every output container, before any input is opened."""
    suffixes = sorted({job.output.suffix.lower() for job in jobs if job.output.suffix})
    for suffix in suffixes:
        check_encoding(encode.codec, crf=encode.crf, preset=encode.preset, pix_fmt=encode.pix_fmt, extension=suffix)
    if suffixes:
        return
    given = [name for name, value in (("--crf", encode.crf), ("--preset", encode.preset),
                                      ("--pix-fmt", encode.pix_fmt), ("--save-frames", save_frames)) if value]
    if given:
        raise UsageError(f"{', '.join(given)} apply to video outputs, but {jobs[0].output} is a folder of PNG "
                         "frames; drop them or write a .mp4/.mov/.mkv")


def run(request: RestoreRequest) -> int:
    """Run the batch; exit code 0 (all done or skipped), 1 (some failed), 130/143 (interrupted)."""
    if request.ranks is not None:
        return run_step_parallel(request)
    return run_jobs(request)


def run_step_parallel(request: RestoreRequest) -> int:
    """One process of a step-parallel job: rank 0 runs the batch as one process would, sharing each
    denoising step with the others; the others only follow (no output, no progress, errors only)."""
    rank, world = request.ranks
    group = join_group(rank, world, resolve_device(request.engine.device))
    spec = dataclasses.replace(request.engine, group=group)
    try:
        if group.leader:
            return run_jobs(dataclasses.replace(request, engine=spec))
        with GracefulInterrupt():  # the leader decides where to stop; a second Ctrl-C stops at once
            serve_as_worker(spec)
        return 0
    except Exception as exc:
        if group.leader:
            raise
        message, code = error_line(exc)  # a worker's error: one line, and no --json report (rank 0 gives it)
        prefix = "" if message.startswith(f"rank {rank}:") else f"rank {rank}: "
        typer.echo(f"error: {prefix}{message}", err=True)
        return code
    finally:
        group.finish()


def run_jobs(request: RestoreRequest) -> int:
    """The batch of this process, reported on stdout/stderr."""
    reporter = make_reporter(request.quiet)
    results = []
    code = 0
    if request.shard is not None:
        reporter.message(shard_line(request))
    try:
        make_engine = engine_factory(request.engine, reporter)
        results = run_batch(list(request.jobs), make_engine, request.encode, overwrite=request.overwrite,
                            fps=request.fps, reporter=reporter, collect=results)
        code = 1 if any(r.status == "failed" for r in results) else 0
    except Interrupted as exc:
        if not any(r.status == "interrupted" for r in results):  # else the runner has said so already
            reporter.message(f"interrupted: {exc}")
        code = exc.exit_code
    finally:
        reporter.close()
    if len(results) > 1 or code == 1:
        reporter.message(summary_line(results))
    if request.json_report:
        shard = None if request.shard is None else {"index": request.shard[0], "count": request.shard[1],
                                                     "inputs": len(request.jobs), "of": request.planned}
        json.dump({"results": [r.as_dict() for r in results], "exit_code": code, "shard": shard}, sys.stdout,
                  indent=2)
        sys.stdout.write("\n")
    return code


def shard_line(request: RestoreRequest) -> str:
    index, count = request.shard
    share = f"shard {index}/{count}: {len(request.jobs)} of {request.planned} inputs"
    return share if request.jobs else f"{share}: nothing to do (every input belongs to another shard)"
