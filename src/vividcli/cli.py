"""`vividvr`: the command line. Commands only validate options into configs and hand them on."""

from __future__ import annotations

import json
import logging
import sys
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Optional

import typer

from vividcli import __version__
from vividcli.errors import UsageError, VividError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Restore low-quality video with Vivid-VR (or a classic, weight-free restorer).")
cache_app = typer.Typer(no_args_is_help=True, help="See and reclaim the resumable job cache.")
app.add_typer(cache_app, name="cache")

Paths = Annotated[list[Path], typer.Argument(help="Video files, image-sequence folders, or folders of videos.")]


def fail(message: str, code: int, debug: bool = False) -> None:
    """Print a one-line error (the traceback only with --debug) and exit."""
    if debug:
        logging.getLogger("vividcli").exception(message)
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def show_debug_log(debug: bool) -> None:
    """With --debug, vividcli's debug records (tracebacks of failed inputs among them) go to stderr."""
    logger = logging.getLogger("vividcli")
    if debug and not any(getattr(h, "vividvr_debug", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.vividvr_debug = True  # one handler however often the CLI runs in a process (tests)
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"vividvr {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[Optional[bool], typer.Option("--version", callback=version_callback, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    """vividvr: faithful Vivid-VR video restoration as a Unix media tool."""


@app.command()
def restore(
    inputs: Paths,
    output: Annotated[str, typer.Option("-o", "--output", help="Output file (single input) or folder (several "
                                        "inputs, or a name ending in /). A name without extension is a folder "
                                        "of PNG frames.")],
    engine: Annotated[str, typer.Option(help="vivid: Vivid-VR (needs checkpoints). classic: a deterministic "
                                        "weight-free restorer (denoise + Lanczos + unsharp), not a neural model. "
                                        "realesrgan: frame-wise super-resolution with --sr-model (a fast baseline).")] = "vivid",
    ckpt_dir: Annotated[Optional[Path], typer.Option(help="Checkpoint folder (official layout); default "
                                                     "$VIVIDVR_CKPT_DIR or `vividvr models path`.")] = None,
    caption: Annotated[Optional[str], typer.Option(help="One caption for every clip and tile.")] = None,
    captions_file: Annotated[Optional[Path], typer.Option(help="JSON: per clip, per tile captions "
                                                          "(as written by `vividvr caption`).")] = None,
    captioner: Annotated[Optional[str], typer.Option(help="A vision-language model (Hugging Face id or folder) "
                                                     "that captions each clip and tile, or none (empty captions, the default).")] = None,
    trust_remote_code: Annotated[bool, typer.Option(help="Allow the captioner to run code shipped with its "
                                                    "checkpoint (needed by CogVLM2; off by default).")] = False,
    upscale: Annotated[float, typer.Option(help="0: short side to 1024 px (the paper's setting); "
                                           "otherwise a scale factor.")] = 0.0,
    tile_size: Annotated[int, typer.Option(help="Spatial tile in latent pixels (x8 image pixels); stride is half.")] = 128,
    clip_frames: Annotated[int, typer.Option(help="Frames per temporal clip (8k+1); longer videos are "
                                             "split with half overlap and merged every step.")] = 121,
    steps: Annotated[int, typer.Option(help="Denoising steps.")] = 50,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale.")] = 6.0,
    dynamic_cfg: Annotated[bool, typer.Option(help="Use CogVideoX's dynamic CFG schedule.")] = False,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    restoration_guidance: Annotated[float, typer.Option(help="Restoration-guided sampling strength "
                                                        "(e.g. 1.5; <= 0 off): higher keeps closer to the input.")] = -1.0,
    fidelity: Annotated[float, typer.Option(help="ControlNet conditioning scale: 1.0 = the paper; lower "
                                            "lets the model correct more, higher holds the input harder.")] = 1.0,
    color_fix: Annotated[str, typer.Option(help="adain (match each frame's colours to the input) or none.")] = "adain",
    textfix: Annotated[bool, typer.Option(help="Put back legible text: text regions (EasyOCR's CRAFT) come from the "
                                          "Real-ESRGAN-enhanced input (needs the textfix extra; docs/textfix.md).")] = False,
    sr_model: Annotated[Optional[Path], typer.Option(help="Super-resolution model file (any spandrel-loadable, e.g. "
                                                     "RealESRGAN_x4plus.pth) for --engine realesrgan and --textfix; "
                                                     "default <ckpt-dir>/RealESRGAN/RealESRGAN_x2plus.pth.")] = None,
    sr_tile: Annotated[int, typer.Option(help="Tile size of the super-resolution model in input pixels "
                                         "(0: whole frames; smaller saves GPU memory).")] = 512,
    device: Annotated[str, typer.Option(help="auto (cuda if available), cpu, cuda, cuda:N.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto (bfloat16 on cuda, float32 on cpu), bfloat16, float16, float32.")] = "auto",
    fps: Annotated[Optional[str], typer.Option(help="Frame rate of image-sequence inputs (e.g. 24, 30000/1001).")] = None,
    recursive: Annotated[bool, typer.Option(help="Look for videos in subfolders of input folders.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Redo inputs whose output already exists.")] = False,
    codec: Annotated[Optional[str], typer.Option(help="libx264 (default), libx265, prores, ffv1, or png.")] = None,
    crf: Annotated[Optional[int], typer.Option(help="x264/x265 quality (lower is better).")] = None,
    preset: Annotated[Optional[str], typer.Option(help="x264/x265 speed preset.")] = None,
    pix_fmt: Annotated[Optional[str], typer.Option(help="Output pixel format (default from codec and input bit depth).")] = None,
    save_frames: Annotated[Optional[Path], typer.Option(help="Also write the frames as PNGs into this folder.")] = None,
    no_audio: Annotated[bool, typer.Option("--no-audio", help="Drop audio (subtitles and data are still copied).")] = False,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Job cache folder (default $VIVIDVR_CACHE_DIR or the user cache).")] = None,
    no_resume: Annotated[bool, typer.Option("--no-resume", help="Start fresh even if a cached job exists.")] = False,
    checkpoint_every: Annotated[int, typer.Option(help="Save the denoising state every N steps.")] = 1,
    keep_cache: Annotated[bool, typer.Option(help="Keep a finished job's cached state.")] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Print only errors.")] = False,
    json_report: Annotated[bool, typer.Option("--json", help="Print a JSON report on stdout at the end.")] = False,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Restore videos or image sequences."""
    values = dict(locals())
    from vividcli import restore_command
    from vividcli.runner import unexpected_error

    show_debug_log(debug)
    try:
        request = restore_command.build_request(**values)
        code = restore_command.run(request)
    except Exception as exc:  # a VividError, or one we did not foresee: one line, the traceback with --debug
        message, code = (str(exc), exc.exit_code) if isinstance(exc, VividError) else (unexpected_error(exc), 1)
        if json_report:  # scripts parse stdout whatever happened
            typer.echo(json.dumps({"results": [], "exit_code": code, "error": message}, indent=2))
        fail(message, code, debug)
    raise typer.Exit(code)


@app.command()
def caption(
    input: Annotated[Path, typer.Argument(help="A video file or image-sequence folder.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Captions JSON to write (per clip, per tile).")],
    captioner: Annotated[str, typer.Option(help="Vision-language model id or folder, or none (an empty template to fill in).")] = "none",
    trust_remote_code: Annotated[bool, typer.Option(help="Allow the captioner to run code from its checkpoint.")] = False,
    upscale: Annotated[float, typer.Option(help="As for restore: the captions follow restore's tiling.")] = 0.0,
    tile_size: Annotated[int, typer.Option(help="As for restore.")] = 128,
    clip_frames: Annotated[int, typer.Option(help="As for restore.")] = 121,
    fps: Annotated[Optional[str], typer.Option(help="Frame rate of an image-sequence input.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, bfloat16, float16, float32.")] = "auto",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing captions file.")] = False,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Write the per-clip, per-tile captions `restore` would use, to read, edit and pass back with --captions-file."""
    values = {k: v for k, v in locals().items() if k != "debug"}
    from vividcli import caption_command
    from vividcli.runner import unexpected_error

    show_debug_log(debug)
    try:
        caption_command.run(**values)
    except VividError as exc:
        fail(str(exc), exc.exit_code, debug)
    except Exception as exc:
        fail(unexpected_error(exc), 1, debug)


@app.command()
def doctor(
    ckpt_dir: Annotated[Optional[Path], typer.Option(help="Checkpoint folder to check.")] = None,
) -> None:
    """Print the environment: versions, devices, codecs, checkpoints, cache."""
    from vividcli.doctor import report

    for line in report(ckpt_dir):
        typer.echo(line)


@cache_app.command("ls")
def cache_ls(cache_dir: Annotated[Optional[Path], typer.Option(help="Cache folder.")] = None) -> None:
    """List cached jobs."""
    from vividcli.cache.store import cache_root, list_jobs

    for job in list_jobs(cache_root(cache_dir)):
        progress = job.progress or {}
        where = f"step {progress.get('step')}/{progress.get('steps')}" if progress else ""
        typer.echo(f"{job.key[:12]}  {job.status:<11} {job.size_bytes / 2**20:8.1f} MiB  {job.updated}  "
                   f"{where:<12} {job.input} -> {job.output}")


@cache_app.command("du")
def cache_du(cache_dir: Annotated[Optional[Path], typer.Option(help="Cache folder.")] = None) -> None:
    """Total size of the cache."""
    from vividcli.cache.store import cache_root, disk_usage

    root = cache_root(cache_dir)
    typer.echo(f"{disk_usage(root) / 2**20:.1f} MiB\t{root}")


@cache_app.command("clean")
def cache_clean(
    cache_dir: Annotated[Optional[Path], typer.Option(help="Cache folder.")] = None,
    older_than: Annotated[Optional[str], typer.Option(help="Only jobs untouched for this long: 30m, 12h, 7d.")] = None,
    job: Annotated[Optional[str], typer.Option(help="Only this job (key or unique key prefix).")] = None,
    dry_run: Annotated[bool, typer.Option(help="Show what would be removed.")] = False,
) -> None:
    """Remove cached jobs (never one a live process is working on)."""
    from vividcli.cache.store import cache_root, clean

    try:
        age = parse_age(older_than) if older_than else None
        report = clean(cache_root(cache_dir), older_than=age, job=job, dry_run=dry_run)
    except VividError as exc:
        fail(str(exc), exc.exit_code)
    verb = "would remove" if dry_run else "removed"
    typer.echo(f"{verb} {len(report.removed)} job(s), {report.freed_bytes / 2**20:.1f} MiB; "
               f"{len(report.skipped_locked)} in use, kept")


def parse_age(text: str):
    import datetime as dt

    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    try:
        return dt.timedelta(seconds=float(text[:-1]) * units[text[-1]])
    except (KeyError, ValueError):
        raise UsageError(f"--older-than takes a number and a unit (s, m, h, d, w), e.g. 7d; got {text!r}") from None


from vividcli.commands.models import models_app  # noqa: E402  (its own module; mounted here)

app.add_typer(models_app, name="models")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("error: aborted by a second Ctrl-C; the vivid engine's cache keeps the steps it saved: "
                   "run the same command again to resume", err=True)
        sys.exit(130)
