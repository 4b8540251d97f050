"""Restoration options: one frozen dataclass, validated in one place."""

from __future__ import annotations

import math
from dataclasses import dataclass

from vividcli.errors import UsageError

COLOR_FIXES = ("adain", "none")
# Limits that otherwise fail late, after the models are loaded:
# the 3D RoPE tables cover at most 150 x 150 patches of 2 latents (sampling/sampler.py `rotary_embedding`,
# max_size as the reference), so a larger spatial tile crashes when the rotary tables are built;
MAX_TILE_SIZE = 300
# CogVideoX's scheduler has 1000 training timesteps and diffusers refuses more inference steps;
MAX_STEPS = 1000
# torch generators take 64-bit seeds.
SEED_RANGE = (-(2**63), 2**64 - 1)
# Where the denoising models live (models/offload.py); auto picks by the device's free memory.
OFFLOAD_MODES = ("auto", "none", "model", "group", "sequential")
# How the denoising models' weights are stored: in the compute dtype, or as fp8 cast per layer.
WEIGHT_FORMATS = ("bf16", "fp8")
# Real-ESRGAN tiling (`--sr-tile`; models/realesrgan.py): here so the CLI checks it without torch.
SR_DEFAULT_TILE = 512
SR_TILE_OVERLAP = 16


@dataclass(frozen=True)
class RestoreOptions:
    """Every option that changes the numerics of a Vivid-VR restoration (defaults = the paper's)."""

    upscale: float = 0.0  # 0: short side to 1024 px (bicubic); otherwise a scale factor
    tile_size: int = 128  # latent pixels; stride is half of it
    clip_frames: int = 121  # frames per temporal clip (8k+1); longer videos use temporal aggregation
    steps: int = 50
    guidance: float = 6.0
    dynamic_cfg: bool = False
    seed: int = 42
    restoration_guidance: float = -1.0  # <= 0: off
    fidelity: float = 1.0  # γ, CreativeVR's precision knob: scales Vivid-VR's injections (1 trained, 0 plain CogVideoX)
    color_fix: str = "adain"
    # Run the unconditional and conditional CFG halves one after another at batch 1: about half the
    # activation memory, the same result up to float summation order (docs/memory.md).
    sequential_cfg: bool = False

    def __post_init__(self) -> None:
        problems = []
        for name in ("upscale", "guidance", "restoration_guidance", "fidelity"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                problems.append(f"--{name.replace('_', '-')} must be a finite number, got {value!r}")
        for name in ("tile_size", "clip_frames", "steps", "seed"):
            if not isinstance(getattr(self, name), int):
                problems.append(f"--{name.replace('_', '-')} must be a whole number, got {getattr(self, name)!r}")
        if problems:
            raise UsageError(problems[0])
        if self.upscale < 0:
            problems.append(f"--upscale must be 0 (short side to 1024 px) or a positive factor, got {self.upscale}")
        if self.tile_size < 2 or self.tile_size % 2:
            problems.append(f"--tile-size must be an even number of latent pixels >= 2, got {self.tile_size}")
        if self.tile_size > MAX_TILE_SIZE:
            problems.append(f"--tile-size must be at most {MAX_TILE_SIZE} latent pixels ({MAX_TILE_SIZE * 8} px, the "
                            f"rotary position grid of 150 x 150 patches), got {self.tile_size}")
        if self.clip_frames < 9 or self.clip_frames % 8 != 1:
            problems.append(f"--clip-frames must be 8k+1 (9, 17, ..., 121), got {self.clip_frames}")
        if not 1 <= self.steps <= MAX_STEPS:
            problems.append(f"--steps must be between 1 and {MAX_STEPS} (the scheduler's training timesteps), "
                            f"got {self.steps}")
        if not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]:
            problems.append(f"--seed must fit in 64 bits (-2**63 to 2**64 - 1), got {self.seed}")
        if self.guidance < 0:
            problems.append(f"--guidance must be >= 0, got {self.guidance}")
        if self.fidelity < 0:
            problems.append(f"--fidelity must be >= 0, got {self.fidelity}")
        if self.color_fix not in COLOR_FIXES:
            problems.append(f"--color-fix must be one of {', '.join(COLOR_FIXES)}, got {self.color_fix!r}")
        if problems:
            raise UsageError(problems[0])
