"""`vividvr restore`: turn command-line values into one validated request, then run the batch."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from vividcli.cache.signals import GracefulInterrupt, Interrupted
from vividcli.config import RestoreOptions
from vividcli.errors import CheckpointError, UsageError, VividError
from vividcli.progress import make_reporter
from vividcli.runner import EncodeOptions, Job, plan_jobs, run_batch, summary_line

ENGINES = ("vivid", "classic", "realesrgan")
SR_MODEL_FILE = "RealESRGAN_x2plus.pth"  # `vividvr models download --what textfix` puts it in <ckpt>/RealESRGAN/
DTYPES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16",
          "float32": "float32", "fp32": "float32"}


@dataclass(frozen=True)
class RestoreRequest:
    jobs: tuple[Job, ...]
    engine: str
    options: RestoreOptions
    encode: EncodeOptions
    ckpt_dir: Path | None
    caption: str | None
    captions_file: Path | None
    captioner: str | None
    trust_remote_code: bool
    device: str
    dtype: str | None  # None: the engine's default (Real-ESRGAN: float16 on CUDA)
    textfix: bool
    sr_model: Path | None
    sr_tile: int
    fps: Fraction | None
    overwrite: bool
    cache_dir: Path | None
    resume: bool
    checkpoint_every: int
    keep_cache: bool
    quiet: bool
    json_report: bool


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device} was requested but CUDA is not available here; use --device cpu "
                         "(slow) or run on a machine with an NVIDIA GPU")
    if device != "cpu" and not device.startswith("cuda"):
        raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}")
    return device


def resolve_dtype(dtype: str, device: str) -> str:
    if dtype == "auto":
        return "bfloat16" if device.startswith("cuda") else "float32"
    if dtype not in DTYPES:
        raise UsageError(f"--dtype must be auto, bfloat16, float16 or float32, got {dtype!r}")
    return DTYPES[dtype]


def parse_fps(text: str | None) -> Fraction | None:
    if text is None:
        return None
    try:
        fps = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"--fps must be a number or a ratio like 30000/1001, got {text!r}") from None
    if fps <= 0:
        raise UsageError(f"--fps must be positive, got {text}")
    return fps


def build_request(**values) -> RestoreRequest:
    """Validate every option in one place (usage errors exit 2 before any work starts)."""
    v = values
    if v["engine"] not in ENGINES:
        raise UsageError(f"--engine must be one of {', '.join(ENGINES)}, got {v['engine']!r}")
    given = [name for name in ("caption", "captions_file", "captioner") if v[name] is not None]
    if len(given) > 1:
        raise UsageError("use either --caption, --captions-file or --captioner, not several: "
                         + ", ".join("--" + g.replace("_", "-") for g in given))
    if v["captions_file"] is not None:
        from vividcli.stages.prompts import load_captions_file

        load_captions_file(v["captions_file"])  # JSON and structure now; the counts per input later
    check_sr_options(v)
    if v["checkpoint_every"] < 1:
        raise UsageError(f"--checkpoint-every must be at least 1, got {v['checkpoint_every']}")
    options = RestoreOptions(
        upscale=v["upscale"], tile_size=v["tile_size"], clip_frames=v["clip_frames"], steps=v["steps"],
        guidance=v["guidance"], dynamic_cfg=v["dynamic_cfg"], seed=v["seed"],
        restoration_guidance=v["restoration_guidance"], fidelity=v["fidelity"], color_fix=v["color_fix"],
    )
    codec = v["codec"]
    encode = EncodeOptions(codec=None if codec == "png" else codec, crf=v["crf"], preset=v["preset"],
                           pix_fmt=v["pix_fmt"], copy_audio=not v["no_audio"])
    jobs = plan_jobs(list(v["inputs"]), v["output"], recursive=v["recursive"], codec=codec,
                     save_frames=v["save_frames"])
    check_encode_options(encode, jobs, v["save_frames"])
    device = "cpu" if v["engine"] == "classic" and not v["textfix"] else resolve_device(v["device"])
    dtype = resolve_dtype(v["dtype"], device)
    if v["engine"] != "vivid" and v["dtype"] == "auto":
        dtype = None
    return RestoreRequest(
        jobs=tuple(jobs), engine=v["engine"], options=options, encode=encode, ckpt_dir=v["ckpt_dir"],
        caption=v["caption"], captions_file=v["captions_file"], captioner=v["captioner"],
        trust_remote_code=v["trust_remote_code"], device=device, dtype=dtype, textfix=v["textfix"],
        sr_model=v["sr_model"], sr_tile=v["sr_tile"], fps=parse_fps(v["fps"]), overwrite=v["overwrite"],
        cache_dir=v["cache_dir"], resume=not v["no_resume"], checkpoint_every=v["checkpoint_every"],
        keep_cache=v["keep_cache"], quiet=v["quiet"], json_report=v["json_report"],
    )


def check_encode_options(encode: EncodeOptions, jobs: list[Job], save_frames: Path | None) -> None:
    """Encoder options against every output container, before any input is opened."""
    from vividcli.media.writer import check_encoding

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


def check_sr_options(v: dict) -> None:
    """The super-resolution options (--textfix, --sr-model, --sr-tile) fit the engine."""
    if v["textfix"] and v["engine"] == "realesrgan":
        raise UsageError("--textfix takes text from Real-ESRGAN's output, which --engine realesrgan already is; "
                         "drop --textfix")
    if v["sr_model"] is not None and v["engine"] != "realesrgan" and not v["textfix"]:
        raise UsageError("--sr-model is used by --engine realesrgan and --textfix; add one of them or drop it")
    if v["sr_model"] is not None and not Path(v["sr_model"]).is_file():
        raise UsageError(f"super-resolution model {v['sr_model']} does not exist")
    from vividcli.engines.realesrgan import DEFAULT_OVERLAP

    if v["sr_tile"] < 0 or 0 < v["sr_tile"] <= 2 * DEFAULT_OVERLAP:
        raise UsageError(f"--sr-tile must be 0 (whole frames) or a tile size above {2 * DEFAULT_OVERLAP} pixels, "
                         f"got {v['sr_tile']}")


def sr_model_path(request: RestoreRequest) -> Path:
    """--sr-model, else Real-ESRGAN x2plus in the checkpoint folder (the official layout's place for it)."""
    if request.sr_model is not None:
        return request.sr_model
    from vividcli.hub import TEXTFIX, resolve_ckpt_dir

    path = resolve_ckpt_dir(request.ckpt_dir) / TEXTFIX.folder / SR_MODEL_FILE
    if not path.is_file():
        raise CheckpointError(f"Real-ESRGAN x2plus not found at {path}; fetch it with "
                              "`vividvr models download --what textfix`, or pass --sr-model FILE")
    return path


def engine_factory(request: RestoreRequest, reporter):
    """A function (source, interrupt) -> engine; models load once for the whole batch."""
    make = base_engine_factory(request, reporter)
    if not request.textfix:
        return make
    from vividcli.engines.textfix import TextFixEngine
    from vividcli.stages.geometry import upscale_factor
    from vividcli.stages.textfix import TextFixer

    fixer = TextFixer(sr_model_path(request), device=request.device, tile=request.sr_tile)
    return lambda source, interrupt: TextFixEngine(
        make(source, interrupt), fixer, upscale_factor(source.height, source.width, request.options.upscale))


def base_engine_factory(request: RestoreRequest, reporter):
    from vividcli.stages.geometry import upscale_factor

    def scale_of(source) -> float:
        return upscale_factor(source.height, source.width, request.options.upscale)

    if request.engine == "classic":
        from vividcli.engines.classic import ClassicEngine

        return lambda source, interrupt: ClassicEngine(scale=scale_of(source))
    if request.engine == "realesrgan":
        from vividcli.engines.realesrgan import RealESRGANEngine

        engine = RealESRGANEngine(sr_model_path(request), tile=request.sr_tile, device=request.device,
                                  dtype=request.dtype)
        return lambda source, interrupt: engine.with_scale(scale_of(source))

    import torch

    from vividcli.engines.vivid import VividEngine, VividSettings
    from vividcli.hub import resolve_ckpt_dir

    from vividcli.models.loading import CheckpointLayout

    ckpt_dir = resolve_ckpt_dir(request.ckpt_dir)
    CheckpointLayout(ckpt_dir).check()  # fail before any input is touched, with the fix in the message
    settings = VividSettings(
        ckpt_dir=ckpt_dir, options=request.options, device=request.device,
        dtype=getattr(torch, request.dtype), caption=request.caption, captions_file=request.captions_file,
        captioner=request.captioner, trust_remote_code=request.trust_remote_code,
        cache_dir=request.cache_dir, resume=request.resume, checkpoint_every=request.checkpoint_every,
        keep_cache=request.keep_cache,
    )
    outputs = {str(job.input): str(job.output) for job in request.jobs}
    engine = VividEngine(settings, say=reporter.message, output_for=lambda s: outputs.get(str(s.info.path), ""))

    def make(source, interrupt: GracefulInterrupt):
        engine.interrupt = interrupt
        return engine

    return make


def run(request: RestoreRequest) -> int:
    """Run the batch; exit code 0 (all done or skipped), 1 (some failed), 130/143 (interrupted)."""
    reporter = make_reporter(request.quiet)
    results = []
    code = 0
    try:
        make_engine = engine_factory(request, reporter)
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
        json.dump({"results": [r.as_dict() for r in results], "exit_code": code}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return code
