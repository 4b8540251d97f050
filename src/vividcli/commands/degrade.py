"""`vividvr degrade IN -o OUT --preset P --seed N`: a degraded copy of a clean video (test pairs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vividcli.commands.common import Debug, one_line_errors
from vividcli.commands.options import JsonReport, Quiet, ReplaceOutput
from vividcli.quality.degrade import DegradeConfig, run_degrade


def degrade(
    input: Annotated[Path, typer.Argument(help="Clean video file or image-sequence folder.", show_default=False)],
    output: Annotated[Path, typer.Option("-o", "--output", help="Degraded video (.mp4, .mov, .mkv), or a name "
                                         "without extension for a folder of PNG frames.", show_default=False)],
    preset: Annotated[str, typer.Option(help="light, medium, strong: CreativeVR's structural degradations "
                                        "(morphing, grid warping, motion blur, dropped frames, temporal "
                                        "downsampling); realworld: the Real-ESRGAN/RealBasicVSR chain "
                                        "(blur, downscale, noise, JPEG, libx264 pass). "
                                        "See docs/degrade.md.")] = "medium",
    structural: Annotated[Optional[str], typer.Option(help="Override the preset's structural level: none, "
                                                      "light, medium, strong.")] = None,
    photometric: Annotated[Optional[str], typer.Option(help="Override the preset's photometric level: none, "
                                                       "light, medium, strong (realworld is medium).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives a bit-identical result.")] = 0,
    scale: Annotated[float, typer.Option(help="Output size as a factor of the input size (e.g. 0.25 for "
                                         "x4 super-resolution pairs).")] = 1.0,
    codec: Annotated[Optional[str], typer.Option(help="Encoder: libx264 (default), libx265, prores, ffv1 "
                                                 "(lossless: keeps exactly the degradation).")] = None,
    crf: Annotated[Optional[int], typer.Option(help="x264/x265 quality of the output (default 18).")] = None,
    encoder_preset: Annotated[Optional[str], typer.Option(help="x264/x265 speed preset of the output "
                                                          "(default veryfast).")] = None,
    fps: Annotated[Optional[str], typer.Option(help="Frame rate of an image-sequence input (default 24).")] = None,
    no_audio: Annotated[bool, typer.Option("--no-audio", help="Do not copy the input's audio.")] = False,
    overwrite: ReplaceOutput = False,
    quiet: Quiet = False,
    json_report: JsonReport = False,
    debug: Debug = False,
) -> None:
    """Degrade a clean video deterministically, keeping its frame count, timing and audio."""
    with one_line_errors(debug=debug):
        config = DegradeConfig.from_options(
            input=input, output=output, preset=preset, structural=structural, photometric=photometric, seed=seed,
            scale=scale, codec=codec, crf=crf, encoder_preset=encoder_preset, fps=fps, audio=not no_audio,
            overwrite=overwrite, json=json_report, quiet=quiet)
        code = run_degrade(config)
    raise typer.Exit(code)
