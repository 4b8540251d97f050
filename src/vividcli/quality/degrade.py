"""`vividvr degrade`: make a degraded copy of a clean video, for test pairs (docs/degrade.md).

    config = DegradeConfig.from_options(input="clean.mp4", output="lq.mp4", preset="medium", seed=1)
    summary = degrade_video(config)   # run_degrade(config): the command (prints, returns the exit code)

Streaming (one frame in flight per stage, plus the codec pass's few frames of lookahead),
deterministic for a seed, same frame count and timing as the input, audio copied by the writer.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vividcli.errors import UsageError
from vividcli.media.reader import open_source
from vividcli.media.writer import check_encoding, open_writer
from vividcli.progress import QuietReporter, make_reporter
from vividcli.quality.photometric import CodecPass, PhotometricDegrader, to_float
from vividcli.quality.presets import LEVEL_NAMES, PHOTOMETRIC, PRESETS, STRUCTURAL
from vividcli.quality.streams import prefetch, resize_to
from vividcli.quality.structural import StructuralDegrader

__all__ = ["DegradeConfig", "run_degrade", "degrade_video", "degrade_stream"]

MAX_SEED = 2**63 - 1
X264_LIKE = ("libx264", "libx265")
DEFAULT_ENCODER_PRESET = "veryfast"
"""x264/x265 preset of the degraded file: at 720p on two cores the encoder, not the degradation,
sets the pace (medium: ~8 frames/s, veryfast: ~14 in one measurement); the CRF (default 18) sets
the quality, so a faster preset mostly costs file size, which test clips can afford."""


@dataclass(frozen=True)
class DegradeConfig:
    input: Path
    output: Path
    structural: str
    photometric: str
    seed: int = 0
    scale: float = 1.0
    codec: str | None = None
    crf: int | None = None
    encoder_preset: str | None = None
    fps: str | None = None
    audio: bool = True
    overwrite: bool = False
    json: bool = False
    quiet: bool = False

    @classmethod
    def from_options(cls, *, input: str | Path, output: str | Path, preset: str = "medium",
                     structural: str | None = None, photometric: str | None = None, seed: int = 0,
                     scale: float = 1.0, codec: str | None = None, crf: int | None = None,
                     encoder_preset: str | None = None, fps: str | None = None, audio: bool = True,
                     overwrite: bool = False, json: bool = False, quiet: bool = False) -> DegradeConfig:
        """Validate the options (UsageError, exit 2) and resolve the preset into the two levels."""
        if preset not in PRESETS:
            raise UsageError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
        default_structural, default_photometric = PRESETS[preset]
        structural = default_structural if structural is None else structural
        photometric = default_photometric if photometric is None else photometric
        for name, value in (("--structural", structural), ("--photometric", photometric)):
            if value not in LEVEL_NAMES:
                raise UsageError(f"{name} must be one of {', '.join(LEVEL_NAMES)}, got {value!r}")
        if not 0 <= seed <= MAX_SEED:
            raise UsageError(f"--seed must be from 0 to {MAX_SEED}, got {seed}")
        if not (math.isfinite(scale) and 0.05 <= scale <= 4):
            raise UsageError(f"--scale must be from 0.05 to 4, got {scale}")
        out = Path(output)
        if out.suffix:
            name = check_encoding(codec, crf=crf, preset=encoder_preset, extension=out.suffix)
            if encoder_preset is None and name in X264_LIKE:
                encoder_preset = DEFAULT_ENCODER_PRESET
        elif codec is not None or crf is not None or encoder_preset is not None:
            raise UsageError(f"--codec/--crf/--encoder-preset do not apply to a PNG-folder output ({out} has no "
                             "extension)")
        return cls(input=Path(input), output=out, structural=structural, photometric=photometric, seed=seed,
                   scale=scale, codec=codec, crf=crf, encoder_preset=encoder_preset, fps=fps, audio=audio,
                   overwrite=overwrite, json=json, quiet=quiet)


def _output_size(width: int, height: int, scale: float) -> tuple[int, int]:
    return max(2, round(width * scale)), max(2, round(height * scale))


def degrade_stream(frames: Iterator[np.ndarray], config: DegradeConfig, *, width: int, height: int,
                   fps) -> Iterator[np.ndarray]:
    """The degraded frames (float32 RGB at the output size), one per input frame."""
    out_w, out_h = _output_size(width, height, config.scale)
    level = STRUCTURAL[config.structural]
    if level is not None:
        frames = StructuralDegrader(level, seed=config.seed, width=width, height=height, fps=float(fps))(frames)
    photometric = PHOTOMETRIC[config.photometric]
    if photometric is not None:
        degrader = PhotometricDegrader(photometric, seed=config.seed, width=width, height=height, fps=float(fps))
        small = (degrader(frame, t) for t, frame in enumerate(frames))
        coded = CodecPass(width=degrader.size[0], height=degrader.size[1], fps=fps, crf=photometric.crf)(small)
        frames = (to_float(frame) for frame in coded)
    return (resize_to(frame, out_w, out_h) for frame in frames)


def run_degrade(config: DegradeConfig) -> int:
    """`vividvr degrade`: degrade, print the --json summary and a closing line; exit code 0."""
    reporter = make_reporter(config.quiet)
    try:
        summary = degrade_video(config, reporter)
    finally:
        reporter.close()
    if config.json:
        print(json.dumps(summary), flush=True)
    if not config.quiet:
        print(f"{summary['output']}: {summary['frames']} frames {summary['width']}x{summary['height']}, structural "
              f"{summary['structural']}, photometric {summary['photometric']}, seed {summary['seed']} "
              f"({summary['seconds']:.1f} s)", file=sys.stderr, flush=True)
    return 0


def degrade_video(config: DegradeConfig, reporter: QuietReporter | None = None) -> dict:
    """Degrade `config.input` into `config.output`; returns a summary (what a --json report prints)."""
    reporter = reporter or QuietReporter()
    source = open_source(config.input, config.fps)
    info = source.info
    out_w, out_h = _output_size(info.width, info.height, config.scale)
    options = {"codec": config.codec, "crf": config.crf, "preset": config.encoder_preset,
               "copy_audio": config.audio} if config.output.suffix else {}
    started = time.monotonic()
    reporter.stage("degrade", info.num_frames)
    writer = open_writer(config.output, width=out_w, height=out_h, source=info, overwrite=config.overwrite,
                         **options)
    with writer:
        for frame in degrade_stream(prefetch(source.frames()), config, width=info.width, height=info.height,
                                    fps=info.fps):
            writer.write(frame)
            reporter.advance()
    seconds = time.monotonic() - started
    for warning in getattr(writer, "warnings", []):
        reporter.message(f"warning: {warning}")
    return {"input": str(config.input), "output": str(config.output), "frames": writer.frames_written,
            "fps": str(info.fps), "width": out_w, "height": out_h, "structural": config.structural,
            "photometric": config.photometric, "seed": config.seed, "seconds": round(seconds, 3)}
