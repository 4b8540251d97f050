"""`vividvr eval OUTPUT [--ref CLEAN] [--input DEGRADED]`: per-frame quality and temporal consistency."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vividcli.commands.common import Debug, one_line_errors
from vividcli.quality.evaluate import EvalConfig, run_eval


def evaluate(
    output: Annotated[Path, typer.Argument(help="The video to measure (e.g. a restoration).", show_default=False)],
    ref: Annotated[Optional[Path], typer.Option(help="Clean reference: enables PSNR and SSIM (RGB and Y) "
                                                "and LPIPS; also gives the optical flow.")] = None,
    input: Annotated[Optional[Path], typer.Option("--input", help="The degraded input: measured the same "
                                                  "way (resized to the output's size) for comparison.")] = None,
    per_frame: Annotated[Optional[Path], typer.Option(help="Write per-frame values to this .csv or .json "
                                                      "file.")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Write a PNG plot of the per-frame curves.")] = None,
    align: Annotated[bool, typer.Option(help="Resize the output to the reference's size and compare the "
                                        "first N frames when sizes or frame counts differ (else: an error).")] = False,
    lpips_weights: Annotated[Optional[Path], typer.Option(help="AlexNet (torchvision) or LPIPS checkpoint "
                                                          "file: adds LPIPS (needs the lpips extra).")] = None,
    fps: Annotated[Optional[str], typer.Option(help="Frame rate of image-sequence inputs (default 24).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace existing --per-frame/--plot files.")] = False,
    json_report: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object on "
                                              "stdout (the table goes to stderr).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No table, no progress.")] = False,
    debug: Debug = False,
) -> None:
    """Measure a video: PSNR/SSIM against a reference, flow-warping error and flicker for any video."""
    with one_line_errors(debug=debug):
        config = EvalConfig.from_options(output=output, ref=ref, input=input, per_frame=per_frame, plot=plot,
                                         align=align, lpips_weights=lpips_weights, fps=fps, overwrite=overwrite,
                                         json=json_report, quiet=quiet)
        code = run_eval(config)
    raise typer.Exit(code)
