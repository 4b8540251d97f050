"""The batch runner: inputs -> outputs, one engine, nothing lost.

`plan_jobs` decides what each input becomes (pure, tested on its own); `run_batch` restores them
one by one: an existing output is skipped unless `overwrite`; a failing input is reported and the
batch goes on; outputs appear atomically (the writers rename a finished temporary file).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

from vividcli.engines.base import Engine, EngineFactory, checked_restore
from vividcli.errors import UsageError, VividError, unexpected_error
from vividcli.interrupt import GracefulInterrupt, Interrupted
from vividcli.media.codecs import VIDEO_EXTENSIONS
from vividcli.media.probe import list_images
from vividcli.media.reader import FrameSource, open_source
from vividcli.media.writer import open_writer, same_file
from vividcli.parallel import RankFailure

log = logging.getLogger(__name__)

INPUT_VIDEO_EXTENSIONS = {".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".flv", ".wmv", ".mpg", ".mpeg",
                          ".ts", ".m2ts", ".mts", ".3gp", ".ogv", ".gif"}


@dataclass(frozen=True)
class Job:
    input: Path
    output: Path
    save_frames: Path | None = None  # where --save-frames puts this input's PNGs


@dataclass(frozen=True)
class EncodeOptions:
    codec: str | None = None  # None: libx264 for video outputs; "png": PNG folders
    crf: int | None = None
    preset: str | None = None
    pix_fmt: str | None = None
    copy_audio: bool = True


@dataclass
class JobResult:
    input: str
    output: str
    status: str  # done | skipped | failed | interrupted
    frames: int = 0
    fps: str = ""
    seconds: float = 0.0
    error: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def is_video_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in INPUT_VIDEO_EXTENSIONS


def expand_input(path: Path, recursive: bool) -> list[Path]:
    """A video file or image folder is one input; a folder of videos is many (deeper with recursive)."""
    if not path.exists():
        raise UsageError(f"input {path} does not exist")
    if not path.is_dir():  # a file, or a device or pipe: the reader says whether it is a video
        return [path]
    if list_images(path):
        return [path]
    found = sorted(p for p in (path.rglob("*") if recursive else path.iterdir()) if is_video_file(p))
    if recursive:
        found += sorted(d for d in path.rglob("*") if d.is_dir() and list_images(d))
    if not found:
        hint = "" if recursive else " (use --recursive to look in subfolders)"
        raise UsageError(f"{path} holds no videos and no images{hint}")
    return found


def output_name(input_path: Path, codec: str | None) -> str:
    """The mirrored name: videos keep their container (unknown ones become .mp4), image folders stay folders."""
    if codec == "png" or input_path.is_dir():
        return input_path.stem if input_path.is_file() else input_path.name
    suffix = input_path.suffix.lower()
    return input_path.stem + (suffix if suffix in VIDEO_EXTENSIONS else ".mp4")


def plan_jobs(inputs: list[Path], output: str | os.PathLike[str], *, recursive: bool = False,
              codec: str | None = None, save_frames: Path | None = None) -> list[Job]:
    """Single input + a file-like output: that file (no extension: a PNG folder). Otherwise `output` is a
    folder (as is any output written with a trailing slash, existing or not), mirroring the input names.
    --save-frames holds one input's PNGs, or with several inputs one subfolder per output name."""
    if not inputs:
        raise UsageError("no input given")
    folder_hint = str(output).endswith(("/", os.sep))
    output = Path(output)
    expanded = [(root, p) for root in inputs for p in expand_input(root, recursive)]
    single = len(expanded) == 1 and expanded[0][1] == inputs[0]
    if single and not (output.is_dir() or folder_hint):
        check_single_output(output, codec)
        return [Job(inputs[0], output, save_frames)]
    if output.exists() and not output.is_dir():
        raise UsageError(f"output {output} is a file, but several inputs need an output folder")
    if output.suffix.lower() in VIDEO_EXTENSIONS and not output.exists():
        raise UsageError(f"several inputs need an output folder, but {output} is named like a video file; "
                         "give a folder (e.g. -o restored/)")
    jobs = []
    for root, path in expanded:
        relative = path.relative_to(root) if path != root and root.is_dir() else Path(path.name)
        target = output / relative.parent / output_name(path, codec)
        frames = save_frames / relative.parent / Path(target.name).stem if save_frames is not None else None
        jobs.append(Job(path, target, frames if len(expanded) > 1 else save_frames))
    return jobs


def select_shard(jobs: list[Job], index: int, count: int) -> list[Job]:
    """The jobs of shard `index` of `count` (1-based), the same in every process given the same inputs.

    The distinct output paths, sorted as strings, are dealt out in turn: the i-th (from 0) belongs to
    shard i % count + 1. So the split depends neither on the order of the inputs nor on the order the
    filesystem lists a folder in nor on which outputs exist already; shard sizes differ by at most one;
    and jobs that would write the same output (the same file given twice, or two inputs with the same
    name mirrored into one folder) always fall into the same shard, so two shards never write one
    output. The jobs keep their planned order.
    """
    if not 1 <= index <= count:
        raise ValueError(f"shard {index}/{count}: need 1 <= index <= count")
    owner = {name: i % count + 1 for i, name in enumerate(sorted({str(job.output) for job in jobs}))}
    return [job for job in jobs if owner[str(job.output)] == index]


def check_single_output(output: Path, codec: str | None) -> None:
    if codec == "png" and output.suffix:
        raise UsageError(f"--codec png writes a folder of PNG frames, but {output} has an extension; "
                         f"use -o {output.with_suffix('')}")


def output_exists(path: Path) -> bool:
    return path.exists() and (path.is_file() or any(path.iterdir()))


def remove_stale_partials(target: Path) -> None:
    """Delete temporary outputs (`.name.partial-<pid>...`) left beside `target` by killed runs."""
    pattern = re.compile(rf"^\.{re.escape(target.stem)}\.partial-(\d+)")
    if not target.parent.is_dir():
        return
    for leftover in target.parent.iterdir():
        match = pattern.match(leftover.name)
        if match and not pid_alive(int(match.group(1))):
            shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_job(job: Job, source: FrameSource, engine: Engine, encode: EncodeOptions, overwrite: bool,
              progress, interrupt: GracefulInterrupt | None = None) -> int:
    """Restore one input into its output (atomically); returns the number of frames written."""
    info = source.info
    width, height = engine.output_size(info.width, info.height)
    if info.has_alpha:
        progress.message("warning: the alpha channel is dropped (restoration is RGB only)")
    options: dict = {"source": info, "overwrite": overwrite, "bit_depth": info.bit_depth}
    if job.output.suffix:
        options.update(codec=encode.codec, crf=encode.crf, preset=encode.preset, pix_fmt=encode.pix_fmt,
                       copy_audio=encode.copy_audio, save_frames=job.save_frames)
    for folder in (job.output.parent, job.save_frames.parent if job.save_frames else None):
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(job.output)
    frames = checked_restore(engine, source, progress)
    with open_writer(job.output, width=width, height=height, **options) as writer:
        # Take exactly num_frames and commit before the engine's generator ends: the vivid engine
        # marks its cached job done and drops the denoising state there, which must not happen
        # before the output exists (a crash in between would lose all the work).
        for frame in itertools.islice(frames, info.num_frames):
            writer.write(frame)
            if interrupt is not None and interrupt.requested:
                raise interrupted_message(interrupt.signum, engine)
        progress.stage("write", None)
    for _ in frames:  # output committed: let the engine finish (checked_restore enforces the count)
        pass
    for warning in getattr(writer, "warnings", []):
        progress.message(f"warning: {warning}")
    return info.num_frames


def run_job(job: Job, make_engine: EngineFactory, encode: EncodeOptions, *, overwrite: bool,
            fps: Fraction | None, reporter, interrupt: GracefulInterrupt) -> JobResult:
    result = JobResult(input=str(job.input), output=str(job.output), status="failed")
    started = time.monotonic()
    try:
        if same_file(job.output, job.input):
            raise UsageError(f"output {job.output} is the input itself; choose another output path")
        if output_exists(job.output) and not overwrite:
            result.status = "skipped"
            result.error = "output exists (use --overwrite to redo it)"
            return result
        source = open_source(job.input, fps)
        result.fps = str(source.info.fps)
        if fps is not None and source.info.kind == "video" and fps != source.info.fps:
            reporter.message(f"warning: --fps is for image sequences; {job.input.name} keeps its own "
                             f"{source.info.fps} fps")
        engine = make_engine(source, interrupt)
        result.frames = write_job(job, source, engine, encode, overwrite, reporter, interrupt)
        result.status = "done"
    except Interrupted as exc:
        result.status, result.error = "interrupted", str(exc)
        raise
    except RankFailure:  # a step-parallel job lost a rank: the ranks are out of step, the batch cannot go on
        raise
    except VividError as exc:
        result.error = str(exc)
    except OSError as exc:
        result.error = describe_os_error(exc, job)
    except Exception as exc:  # the batch goes on; --debug logs the traceback
        log.debug("%s failed", job.input, exc_info=True)
        result.error = unexpected_error(exc)
    finally:
        result.seconds = round(time.monotonic() - started, 3)
    return result


def describe_os_error(exc: OSError, job: Job) -> str:
    """An OSError as what it stopped: reading the input, or writing the output (whatever temp name it hit)."""
    reason = exc.strerror or str(exc)
    name = Path(exc.filename) if exc.filename else None
    if name is not None and (name == job.input or job.input in name.parents):
        return f"cannot read {job.input}: {reason}"
    return f"cannot write {job.output}: {reason} (check that its folder can be created and written to)"


def run_batch(jobs: list[Job], make_engine: EngineFactory, encode: EncodeOptions, *,
              overwrite: bool = False, fps: Fraction | None = None, reporter,
              collect: list[JobResult] | None = None) -> list[JobResult]:
    """Run every job; failures are recorded and the batch goes on. Ctrl-C/SIGTERM stop it at a safe point.

    Results go into `collect` as they come (so a caller still has them if the batch is interrupted).
    """
    results: list[JobResult] = collect if collect is not None else []
    def on_request(signum: int) -> None:
        reporter.message("stopping at the next safe point; press Ctrl-C again to abort at once")

    with GracefulInterrupt(on_request=on_request) as interrupt:
        for index, job in enumerate(jobs, 1):
            reporter.start_file(index, len(jobs), job.input.name)
            try:
                result = run_job(job, make_engine, encode, overwrite=overwrite, fps=fps, reporter=reporter,
                                 interrupt=interrupt)
            except Interrupted as exc:
                results.append(JobResult(str(job.input), str(job.output), "interrupted", error=str(exc)))
                reporter.end_file(f"interrupted: {exc}")
                raise
            results.append(result)
            reporter.end_file(describe(result))
            if interrupt.requested and index < len(jobs):
                raise Interrupted(interrupt.signum, f"interrupted after {index} of {len(jobs)} inputs; run the "
                                  "same command again to do the rest (finished outputs are skipped)")
    return results


def interrupted_message(signum: int, engine: Engine) -> Interrupted:
    """Interrupted while writing: resumable only where the engine keeps a cache (Vivid-VR does)."""
    if getattr(engine, "resumable", False):
        return Interrupted(signum)
    return Interrupted(signum, f"interrupted; {engine.name} keeps no cache, so this output was not written: "
                       "run the same command again to redo it")


def describe(result: JobResult) -> str:
    if result.status == "done":
        return f"done: {result.output} ({result.frames} frames at {result.fps} fps, {result.seconds:.1f} s)"
    if result.status == "skipped":
        return f"skipped: {result.output} exists (use --overwrite to redo it)"
    return f"{result.status}: {result.error}"


def summary_line(results: list[JobResult]) -> str:
    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed", "interrupted")}
    line = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    failed = [r.input for r in results if r.status == "failed"]
    return line + (f"; failed: {', '.join(failed)}" if failed else "")
