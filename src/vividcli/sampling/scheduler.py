"""The CogVideoX DPM-solver step, optionally with Vivid-VR's restoration-guided sampling.

Restoration guidance (paper section 3.3) pulls the model's x0 prediction towards the
low-quality video's latents before the solver update:

    x0 <- x0 + (t / T) ** s * (control_latents - x0)

with `T = num_train_timesteps` and `s` the guidance scale (off when `s <= 0`). The solver itself is
diffusers' stock `CogVideoXDPMScheduler.step`: for a guided step we compute x0 from the v-prediction
exactly as the stock step does, guide it, and hand it to a twin scheduler configured with
`prediction_type="sample"`, which then performs the identical update and noise draws.
"""

from __future__ import annotations

import torch
from diffusers import CogVideoXDPMScheduler


class GuidedDPMSolver:
    """A stock `CogVideoXDPMScheduler` plus the restoration-guided variant of its step."""

    def __init__(self, scheduler: CogVideoXDPMScheduler):
        if scheduler.config.prediction_type != "v_prediction":
            raise ValueError("Vivid-VR expects a v-prediction scheduler config")
        self.scheduler = scheduler
        self._x0_solver = CogVideoXDPMScheduler.from_config(scheduler.config, prediction_type="sample")

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None) -> torch.Tensor:
        for s in (self.scheduler, self._x0_solver):
            s.set_timesteps(num_inference_steps, device=device)
        return self.scheduler.timesteps

    @property
    def timesteps(self) -> torch.Tensor:
        return self.scheduler.timesteps

    def step(
        self,
        model_output: torch.Tensor,
        old_pred_original_sample: torch.Tensor | None,
        timestep: torch.Tensor,
        timestep_back: torch.Tensor | None,
        sample: torch.Tensor,
        generator: torch.Generator | None,
        restoration_guidance_scale: float = -1.0,
        control_latents: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One solver step -> (previous sample, x0 prediction). Draws noise from `generator` like the stock step."""
        if restoration_guidance_scale <= 0:
            return self.scheduler.step(
                model_output, old_pred_original_sample, timestep, timestep_back, sample,
                eta=0.0, generator=generator, return_dict=False,
            )
        x0 = self._guided_x0(model_output, timestep, sample, restoration_guidance_scale, control_latents)
        return self._x0_solver.step(
            x0, old_pred_original_sample, timestep, timestep_back, sample,
            eta=0.0, generator=generator, return_dict=False,
        )

    def _guided_x0(
        self, v: torch.Tensor, timestep: torch.Tensor, sample: torch.Tensor, scale: float, target: torch.Tensor | None
    ) -> torch.Tensor:
        if target is None:
            raise ValueError("restoration guidance needs the control latents")
        alpha_prod_t = self.scheduler.alphas_cumprod[timestep]
        # Same expression and operand order as the stock v-prediction branch, so x0 is bit-identical.
        x0 = (alpha_prod_t**0.5) * sample - ((1 - alpha_prod_t) ** 0.5) * v
        strength = (float(timestep) / self.scheduler.config.num_train_timesteps) ** scale
        return x0 + strength * (target - x0)
