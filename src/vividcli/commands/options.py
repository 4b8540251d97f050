"""Options that several commands share, defined once (`restore` and `caption` plan the same run).

Each is an `Annotated` type: a command declares `upscale: Upscale = 0.0` and gets the same flag and
help text as every other command that takes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

CkptDir = Annotated[Optional[Path], typer.Option(
    help="Checkpoint folder (official layout); default $VIVIDVR_CKPT_DIR or `vividvr models path`.")]
Captioner = Annotated[Optional[str], typer.Option(
    help="A vision-language model (Hugging Face id or folder) that captions each clip and tile, "
         "or none (empty captions, the default).")]
TrustRemoteCode = Annotated[bool, typer.Option(
    help="Allow the captioner to run code shipped with its checkpoint (needed by CogVLM2; off by default).")]
Upscale = Annotated[float, typer.Option(
    help="0: short side to 1024 px (the paper's setting); otherwise a scale factor.")]
TileSize = Annotated[int, typer.Option(
    help="Spatial tile in latent pixels (x8 image pixels); stride is half.")]
ClipFrames = Annotated[int, typer.Option(
    help="Frames per temporal clip (8k+1); longer videos are split with half overlap and merged every step.")]
Fps = Annotated[Optional[str], typer.Option(
    help="Frame rate of image-sequence inputs (e.g. 24, 30000/1001).")]
Device = Annotated[str, typer.Option(help="auto (cuda if available), cpu, cuda, cuda:N.")]
Dtype = Annotated[str, typer.Option(
    help="auto (bfloat16 on cuda, float32 on cpu), bfloat16, float16, float32.")]
Overwrite = Annotated[bool, typer.Option(help="Replace outputs that already exist.")]
CacheDir = Annotated[Optional[Path], typer.Option(
    help="Job cache folder (default $VIVIDVR_CACHE_DIR or the user cache).")]
