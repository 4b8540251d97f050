"""Golden cases a and b: module forwards and scheduler steps equal the reference implementation."""

from __future__ import annotations

import pytest
import torch
from diffusers import CogVideoXDPMScheduler
from safetensors.torch import load_file

from vividcli.models.layout import CheckpointLayout
from vividcli.models.loading import load_controlnet, load_transformer
from vividcli.sampling.sampler import rotary_embedding
from vividcli.sampling.scheduler import GuidedDPMSolver


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module")
def case_a(reference_dir):
    return load_file(reference_dir / "golden" / "case_a_module_forward.safetensors")


@pytest.fixture(scope="module")
def fixture_models(reference_ckpt_dir):
    layout = CheckpointLayout(reference_ckpt_dir)
    return load_transformer(layout, torch.float32, "cpu"), load_controlnet(layout, torch.float32, "cpu")


def test_rope_tables_match_reference(case_a):
    cos, sin = rotary_embedding(6, 8, 12, 2, 2, 48)
    assert torch.equal(cos, case_a["rope_cos"]) and torch.equal(sin, case_a["rope_sin"])


def test_case_a_controlnet_states_and_noise_prediction(case_a, fixture_models):
    transformer, controlnet = fixture_models
    rope = (case_a["rope_cos"], case_a["rope_sin"])
    with torch.no_grad():
        states = controlnet(
            case_a["latents"], case_a["prompt_embeds"], case_a["control_latents"], case_a["timestep"],
            image_rotary_emb=rope,
        )
        assert len(states) == 6
        for i, state in enumerate(states):
            assert rel_l2(state, case_a[f"controlnet_hidden_state_{i}"]) <= 1e-5, f"ControlNet state {i}"
        model_input = torch.cat([case_a["latents"], case_a["control_latents"]], dim=2)
        noise = transformer(
            model_input, case_a["prompt_embeds"], case_a["timestep"], control_hidden_states=states,
            image_rotary_emb=rope,
        ).sample
        without = transformer(
            model_input, case_a["prompt_embeds"], case_a["timestep"], control_hidden_states=None,
            image_rotary_emb=rope,
        ).sample
    assert rel_l2(noise, case_a["noise_pred"]) <= 1e-5
    assert rel_l2(without, case_a["noise_pred_without_connectors"]) <= 1e-5
    # The connectors matter: skipping them moves the prediction a lot (guards against a no-op connector).
    assert rel_l2(without, case_a["noise_pred"]) > 0.3


def test_control_latents_passed_apart_and_at_batch_one(case_a, fixture_models):
    """The sampler's CFG path: control latents given separately, at batch 1, shared by the batch of 2.

    Separately at full batch the transformer still reproduces golden case a; at batch 1 both models
    match the same call with the control latents doubled (the reference's CFG input) up to rounding
    (the projector's kernels may sum in another order at another batch size).
    """
    transformer, controlnet = fixture_models
    rope = (case_a["rope_cos"], case_a["rope_sin"])
    latents, text, t = case_a["latents"], case_a["prompt_embeds"], case_a["timestep"]
    one = case_a["control_latents"][:1]
    with torch.no_grad():
        states = controlnet(latents, text, case_a["control_latents"], t, image_rotary_emb=rope)
        apart = transformer(latents, text, t, control_hidden_states=states, image_rotary_emb=rope,
                            control_latents=case_a["control_latents"]).sample
        shared_states = controlnet(latents, text, one, t, image_rotary_emb=rope)
        doubled_states = controlnet(latents, text, torch.cat([one, one]), t, image_rotary_emb=rope)
        shared = transformer(latents, text, t, control_hidden_states=doubled_states, image_rotary_emb=rope,
                             control_latents=one).sample
        doubled = transformer(torch.cat([latents, torch.cat([one, one])], dim=2), text, t,
                              control_hidden_states=doubled_states, image_rotary_emb=rope).sample
        with pytest.raises(ValueError, match="control latents have batch 2; expected 1 or 3"):
            controlnet(torch.cat([latents, latents[:1]]), torch.cat([text, text[:1]]), case_a["control_latents"], t)
    assert rel_l2(apart, case_a["noise_pred"]) <= 1e-5
    for a, b in zip(shared_states, doubled_states):
        assert rel_l2(a, b) <= 1e-5
    assert rel_l2(shared, doubled) <= 1e-5


def test_fidelity_scales_controlnet_states(case_a, fixture_models):
    _, controlnet = fixture_models
    rope = (case_a["rope_cos"], case_a["rope_sin"])
    args = (case_a["latents"], case_a["prompt_embeds"], case_a["control_latents"], case_a["timestep"])
    with torch.no_grad():
        full = controlnet(*args, image_rotary_emb=rope)
        half = controlnet(*args, image_rotary_emb=rope, conditioning_scale=0.5)
    for a, b in zip(full, half):
        torch.testing.assert_close(b, a * 0.5)


@pytest.mark.parametrize("name,scale", [("rgs_off", -1.0), ("rgs1p5", 1.5)])
def test_case_b_scheduler_steps(reference_dir, name, scale):
    golden = load_file(reference_dir / "golden" / f"case_b_scheduler_steps_{name}.safetensors")
    scheduler = CogVideoXDPMScheduler.from_pretrained(reference_dir / "ckpts" / "CogVideoX1.5-5B", subfolder="scheduler")
    solver = GuidedDPMSolver(scheduler)
    timesteps = solver.set_timesteps(5)
    assert timesteps.tolist() == golden["timesteps"].tolist()
    generator = torch.Generator().manual_seed(42)
    sample, old_x0 = golden["sample_in"], None
    for i in range(5):
        sample, old_x0 = solver.step(
            golden[f"step{i}_model_output"], old_x0, timesteps[i], timesteps[i - 1] if i > 0 else None,
            sample, generator, scale, golden["restoration_ori_latent"],
        )
        assert (sample - golden[f"step{i}_prev_sample"]).abs().max() <= 1e-5, f"step {i} sample"
        assert (old_x0 - golden[f"step{i}_pred_original_sample"]).abs().max() <= 1e-5, f"step {i} x0"


def test_restoration_guidance_changes_the_step(reference_dir):
    golden = load_file(reference_dir / "golden" / "case_b_scheduler_steps_rgs1p5.safetensors")
    scheduler = CogVideoXDPMScheduler.from_pretrained(reference_dir / "ckpts" / "CogVideoX1.5-5B", subfolder="scheduler")
    solver = GuidedDPMSolver(scheduler)
    t = solver.set_timesteps(5)
    args = (golden["step0_model_output"], None, t[0], None, golden["sample_in"])
    off = solver.step(*args, torch.Generator().manual_seed(0), -1.0, golden["restoration_ori_latent"])
    on = solver.step(*args, torch.Generator().manual_seed(0), 1.5, golden["restoration_ori_latent"])
    assert not torch.allclose(off[1], on[1])
