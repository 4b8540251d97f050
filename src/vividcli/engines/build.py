"""Build the engine a batch asks for, once: models load a single time for all of its inputs.

    spec = EngineSpec(engine="vivid", options=RestoreOptions(), ckpt_dir=Path("ckpts"))
    make_engine = engine_factory(spec, reporter)        # (source, interrupt) -> Engine
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vividcli.config import RestoreOptions
from vividcli.devices import resolve_device, resolve_dtype
from vividcli.engines.base import Engine, EngineFactory
from vividcli.errors import CheckpointError
from vividcli.interrupt import GracefulInterrupt
from vividcli.media.reader import FrameSource
from vividcli.models.layout import CheckpointLayout
from vividcli.parallel import StepGroup
from vividcli.planning.geometry import upscale_factor


@dataclass(frozen=True)
class EngineSpec:
    """Which restorer, on which device, with which models, captions and cache settings."""

    engine: str = "vivid"  # vivid | classic | realesrgan
    options: RestoreOptions = RestoreOptions()
    ckpt_dir: Path | None = None  # None: `hub.resolve_ckpt_dir`'s default
    caption: str | None = None
    captions_file: Path | None = None
    captioner: str | None = None
    trust_remote_code: bool = False
    device: str = "auto"
    dtype: str = "auto"  # auto: the engine's default
    textfix: bool = False
    sr_model: Path | None = None  # None: Real-ESRGAN x2plus in the checkpoint folder
    sr_tile: int = 512
    cache_dir: Path | None = None
    resume: bool = True
    checkpoint_every: int = 1
    keep_cache: bool = False
    offload: str = "auto"
    weights: str = "bf16"
    ff_chunks: int = 1  # token slices of the denoising blocks (vivid engine; models/chunking.py)
    outputs: dict[str, str] = field(default_factory=dict)  # input path -> output path, for the job cache
    group: StepGroup | None = None  # a step-parallel job's process group (vivid engine)


def checkpoint_dir(spec: EngineSpec) -> Path:
    """The checkpoint folder, checked for a complete layout (no torch: fails at once)."""
    from vividcli.hub import resolve_ckpt_dir

    ckpt_dir = resolve_ckpt_dir(spec.ckpt_dir)
    CheckpointLayout(ckpt_dir).check()
    return ckpt_dir


def sr_model_path(spec: EngineSpec) -> Path:
    """--sr-model, else Real-ESRGAN x2plus in the checkpoint folder (the official layout's place for it)."""
    if spec.sr_model is not None:
        return spec.sr_model
    from vividcli.hub import resolve_ckpt_dir

    path = CheckpointLayout(resolve_ckpt_dir(spec.ckpt_dir)).realesrgan_model
    if not path.is_file():
        raise CheckpointError(f"Real-ESRGAN x2plus not found at {path}; fetch it with "
                              "`vividvr models download --what textfix`, or pass --sr-model FILE")
    return path


def engine_factory(spec: EngineSpec, reporter) -> EngineFactory:
    """A function (source, interrupt) -> engine; with --textfix the engine is wrapped in the text fix."""
    make = base_engine_factory(spec, reporter)
    if not spec.textfix:
        return make
    from vividcli.engines.textfix import TextFixEngine
    from vividcli.stages.textfix import TextFixer

    fixer = TextFixer(sr_model_path(spec), device=resolve_device(spec.device), tile=spec.sr_tile)
    return lambda source, interrupt: TextFixEngine(
        make(source, interrupt), fixer, upscale_factor(source.height, source.width, spec.options.upscale))


def base_engine_factory(spec: EngineSpec, reporter) -> EngineFactory:
    def scale_of(source: FrameSource) -> float:
        return upscale_factor(source.height, source.width, spec.options.upscale)

    if spec.engine == "classic":
        from vividcli.engines.classic import ClassicEngine

        return lambda source, interrupt: ClassicEngine(scale=scale_of(source))
    if spec.engine == "realesrgan":
        from vividcli.engines.realesrgan import RealESRGANEngine

        engine = RealESRGANEngine(sr_model_path(spec), tile=spec.sr_tile, device=resolve_device(spec.device),
                                  dtype=None if spec.dtype == "auto" else spec.dtype)
        return lambda source, interrupt: engine.with_scale(scale_of(source))
    return vivid_engine_factory(spec, reporter)


def vivid_settings(spec: EngineSpec):
    from vividcli.engines.vivid import VividSettings

    ckpt_dir = checkpoint_dir(spec)  # before the device: a missing folder is the likelier mistake
    device = resolve_device(spec.device)
    return VividSettings(
        ckpt_dir=ckpt_dir, options=spec.options, device=str(device), dtype=resolve_dtype(spec.dtype, device),
        caption=spec.caption, captions_file=spec.captions_file, captioner=spec.captioner,
        trust_remote_code=spec.trust_remote_code, cache_dir=spec.cache_dir, resume=spec.resume,
        checkpoint_every=spec.checkpoint_every, keep_cache=spec.keep_cache, offload=spec.offload,
        weights=spec.weights, ff_chunks=spec.ff_chunks, group=spec.group,
    )


def vivid_engine_factory(spec: EngineSpec, reporter) -> EngineFactory:
    from vividcli.engines.vivid import VividEngine

    engine = VividEngine(vivid_settings(spec), say=reporter.message,
                         output_for=lambda s: spec.outputs.get(str(s.info.path), ""))

    def make(source: FrameSource, interrupt: GracefulInterrupt) -> Engine:
        engine.interrupt = interrupt
        return engine

    return make


def serve_as_worker(spec: EngineSpec) -> int:
    """A step-parallel worker (rank > 0): load the denoising models and follow the leader's jobs."""
    from vividcli.engines.step_worker import serve_steps
    from vividcli.engines.vivid import VividEngine

    return serve_steps(VividEngine(vivid_settings(spec)), spec.group)
