"""`vividvr compare A B [C ...] -o OUT`: labelled side-by-side, grid, split or slider comparisons."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vividcli.commands.common import Debug, one_line_errors
from vividcli.commands.options import JsonReport, Quiet, ReplaceOutput
from vividcli.quality.compare import CompareConfig, run_compare


def compare(
    inputs: Annotated[list[Path], typer.Argument(help="Two or more videos (or image folders); the first "
                                                 "gives the timing and the audio.", show_default=False)],
    output: Annotated[Path, typer.Option("-o", "--output", help="Comparison video (.mp4, .mov, .mkv), or "
                                         "a .png contact sheet with --png.", show_default=False)],
    layout: Annotated[str, typer.Option(help="side (in a row), grid, split (vertical strips of one frame) "
                                        "or slider (two inputs, a moving divide).")] = "side",
    labels: Annotated[Optional[str], typer.Option(help="Comma-separated labels (default: file names).")] = None,
    crop: Annotated[Optional[str], typer.Option(help="X,Y,W,H: show only this region (in the largest "
                                                "input's pixels), magnified by --zoom.")] = None,
    zoom: Annotated[float, typer.Option(help="Magnification of --crop (nearest neighbour).")] = 2.0,
    frames: Annotated[Optional[str], typer.Option(help="Frame numbers for --png, e.g. 0,60,120 "
                                                  "(default: 4 spread over the video).")] = None,
    png: Annotated[bool, typer.Option("--png", help="Write a still contact sheet (one row per frame) "
                                      "instead of a video.")] = False,
    align: Annotated[bool, typer.Option(help="Compare the first N frames when frame counts differ "
                                        "(else: an error).")] = False,
    codec: Annotated[Optional[str], typer.Option(help="Encoder: libx264 (default), libx265, prores, ffv1.")] = None,
    crf: Annotated[Optional[int], typer.Option(help="x264/x265 quality (default 18).")] = None,
    fps: Annotated[Optional[str], typer.Option(help="Frame rate of image-sequence inputs (default 24).")] = None,
    no_audio: Annotated[bool, typer.Option("--no-audio", help="Do not copy the first input's audio.")] = False,
    overwrite: ReplaceOutput = False,
    quiet: Quiet = False,
    json_report: JsonReport = False,
    debug: Debug = False,
) -> None:
    """Put videos next to each other, labelled, with the first one's timing and audio."""
    with one_line_errors(debug=debug):
        config = CompareConfig.from_options(
            inputs=inputs, output=output, layout=layout, labels=labels, crop=crop, zoom=zoom, frames=frames,
            png=png, align=align, codec=codec, crf=crf, fps=fps, audio=not no_audio, overwrite=overwrite,
            quiet=quiet, json=json_report)
        code = run_compare(config)
    raise typer.Exit(code)
