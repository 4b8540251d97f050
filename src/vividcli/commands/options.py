"""Options that several commands share, defined once (`restore` and `caption` plan the same run).

Each is an `Annotated` type: a command declares `upscale: Upscale = 0.0` and gets the same flag and
help text as every other command that takes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vividcli.config import OFFLOAD_MODES, WEIGHT_FORMATS
from vividcli.errors import UsageError

CkptDir = Annotated[Optional[Path], typer.Option(
    help="Checkpoint folder (official layout); default $VIVIDVR_CKPT_DIR or `vividvr models path`.")]
Captioner = Annotated[Optional[str], typer.Option(
    help="Vision-language model (Hugging Face id or folder, loaded with transformers' Auto classes) that "
         "captions each clip and tile; none: empty captions. Default: Qwen3-VL-4B-Instruct from the checkpoint "
         "folder (`vividvr models download --what captioner`); when it is not there, a warning and empty captions.",
    show_default=False)]
TrustRemoteCode = Annotated[bool, typer.Option(
    help="Allow a --captioner model to run Python code shipped with its checkpoint (off by default; the default "
         "captioner does not need it).")]
Upscale = Annotated[float, typer.Option(
    help="0: short side to 1024 px (the paper's setting); otherwise a scale factor.")]
TileSize = Annotated[int, typer.Option(
    help="Spatial tile in latent pixels (x8 image pixels; even, at most 300), stride half of it; smaller tiles "
         "need less GPU memory, more tiles more time.")]
ClipFrames = Annotated[int, typer.Option(
    help="Frames per temporal clip (8k+1); longer videos are split with half overlap and merged every step.")]
Fps = Annotated[Optional[str], typer.Option(
    help="Frame rate of image-sequence inputs (e.g. 24, 30000/1001).")]
Device = Annotated[str, typer.Option(help="auto (cuda if available), cpu, cuda, cuda:N.")]
Dtype = Annotated[str, typer.Option(
    help="auto: bfloat16 on cuda, float32 on cpu (Real-ESRGAN models: float16 on cuda where they support it); "
         "or bfloat16, float32, float16 (not for Vivid-VR: it overflows).")]
Offload = Annotated[str, typer.Option(
    help="Where the vivid engine keeps its models: none (all on the GPU), model (the denoising models on the "
         "GPU only while denoising), group (one block at a time), sequential (one layer at a time: least "
         "memory, slowest), or auto (the fastest mode whose planned peak fits the GPU's free memory, adding "
         "--ff-chunks 8 and then --sequential-cfg where needed; none on the CPU). T5 and the VAE are on the "
         "GPU only for their stages in every mode.")]
Weights = Annotated[str, typer.Option(
    help="Vivid engine: store the denoising models' weights in the compute dtype (bf16) or as fp8, cast "
         "layer by layer (half the weight memory; outputs change slightly, docs/memory.md).")]
SequentialCfg = Annotated[bool, typer.Option(
    help="Vivid engine: run the two classifier-free-guidance halves one after another at batch 1 (about half "
         "the activation memory; the same result up to float rounding).")]
FfChunks = Annotated[int, typer.Option(
    help="Vivid engine: run each transformer/ControlNet block's feed-forward and rotary embedding in N token "
         "slices (0 or 1: off; less activation memory, the same result up to float rounding; docs/memory.md). "
         "With --offload auto it is added when that is what fits.")]
Overwrite = Annotated[bool, typer.Option(help="Replace outputs that already exist.")]
CacheDir = Annotated[Optional[Path], typer.Option(
    help="Job cache folder (default $VIVIDVR_CACHE_DIR or the user cache).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
JsonReport = Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")]
ReplaceOutput = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")]


def check_memory_options(offload: str, weights: str, ff_chunks: int) -> None:
    """--offload, --weights and --ff-chunks, as `restore` and `plan` take them (UsageError, exit 2)."""
    if offload not in OFFLOAD_MODES:
        raise UsageError(f"--offload must be one of {', '.join(OFFLOAD_MODES)}, got {offload!r}")
    if weights not in WEIGHT_FORMATS:
        raise UsageError(f"--weights must be one of {', '.join(WEIGHT_FORMATS)}, got {weights!r}")
    if ff_chunks < 0:
        raise UsageError(f"--ff-chunks must be 0 or more (0 or 1: off), got {ff_chunks}")
