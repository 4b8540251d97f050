"""Every stage of a golden restoration (cases c-g), observed under the reference fixture's tensor names.

`run_case` drives the public `restore_frames` and records, without changing the pipeline:

* the conditioning and initial noise (`on_prepared`) and the state after every step (`on_step`);
* the upscaled control video and the VAE input (wrappers around the names `pipeline.py` calls), each
  clip's latents before the last step's temporal merge (a wrapper around the sampler's
  `merge_clips`), the latents handed to `decode_clip` and the frames handed to the colour fix;
* the first transformer call's CFG pair [negative, positive] (a forward hook).

`stage_errors` compares them with the golden tensors, `mismatches` applies `TOLERANCES`. The
`mutate_*` functions install deliberate bugs the comparison must see (tests/test_golden_intermediate.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

import vividcli.pipeline as pipeline
import vividcli.sampling.sampler as sampler
from vividcli.config import RestoreOptions
from vividcli.media.reader import ArraySource

CASES = (
    "case_c_whole_video",
    "case_d_temporal_aggregation",
    "case_e_whole_video_rgs",
    "case_f_whole_video_frame_padding",
    "case_g_temporal_aggregation_padding",
)

# Per-stage tolerances (max |ours - golden|, RMS of ours - golden), CPU fp32.
# Our errors come from one deliberate difference (docs/architecture.md): the control feature
# projectors run at batch 1 instead of on both CFG halves (~2e-6 per value), which CFG 6 amplifies by
# 3-6x per step (10x in the last). Worst over cases c-g measured on the development machine
# (torch 2.14.1, 2 threads), max / RMS:
#   upscaled video, VAE input 0 / 0;  control latents 4.8e-6 / 4.9e-7;  prompt embeddings 3.3e-6 / 3.1e-7;
#   first transformer call 4.3e-6 / 5.5e-7;  initial noise 0 / 0;
#   after step 0: 3.9e-5 / 4.3e-6;  1: 6.4e-5 / 6.7e-6;  2: 3.6e-4 / 3.3e-5;  3: 5.6e-3 / 4.4e-4;
#   4 and latents to decode: 3.2e-2 / 3.1e-3 (case d; c 8.6e-4, e 2.3e-4, f 2.6e-2, g 1.6e-4);
#   frames before colour fix 4.6e-3 / 4.4e-4;  final frames 8.7e-3 / 6.8e-4.
# Tolerances sit 3-10x above those (another CPU sums in other orders too; the worst stage uses 0.32 of
# its tolerance) and at least 10x below the deliberate bugs of test_golden_intermediate.py.
TOLERANCES = {
    "control_video_after_upscale_frame0": (1e-6, 1e-7),
    "vae_input_frame0": (1e-6, 1e-7),
    "control_latents": (5e-5, 5e-6),
    "prompt_embeds": (5e-5, 5e-6),
    "negative_prompt_embeds_tile0": (5e-5, 5e-6),
    "initial": (0.0, 0.0),  # the generator's draws: exact
    "first_call_transformer_noise_pred": (5e-5, 5e-6),
    "step0": (3e-4, 3e-5),
    "step1": (5e-4, 5e-5),
    "step2": (3e-3, 3e-4),
    "step3": (3e-2, 3e-3),
    "step4": (0.1, 1e-2),
    "latents_to_decode": (0.1, 1e-2),
    "frames_before_colorfix": (2e-2, 2e-3),
    "final_frames_after_colorfix": (3e-2, 3e-3),
}
# Golden tensors no stage of ours produces: token ids (their embeddings are compared) and the VAE
# posterior's mean and log-variance (the control latents sampled from it are).
NOT_OBSERVED = {"token_ids_prompts_then_negative", "vae_posterior_mean", "vae_posterior_logvar"}


@dataclass
class GoldenCase:
    name: str
    options: RestoreOptions
    captions: list[list[str]]
    input: np.ndarray  # uint8 [F, H, W, 3]
    golden: dict[str, torch.Tensor]
    num_clips: int

    @classmethod
    def load(cls, reference_dir: Path, name: str) -> "GoldenCase":
        meta = json.loads((reference_dir / "golden" / f"{name}.json").read_text())
        args = meta["args"]
        options = RestoreOptions(
            upscale=args["upscale"], tile_size=args["tile_size"], clip_frames=args["num_temporal_process_frames"],
            steps=args["num_inference_steps"], guidance=args["guidance_scale"], seed=args["seed"],
            restoration_guidance=args["restoration_guidance_scale"], dynamic_cfg=args["use_dynamic_cfg"],
        )
        calls, num_clips = meta["captioner_calls"], meta["num_clips"]
        captions = [[c["caption"] for c in calls if c["clip"] == clip] for clip in range(num_clips)]
        golden = load_file(reference_dir / "golden" / f"{name}.safetensors")
        frames = np.load(reference_dir / "inputs" / meta["input_file"])
        return cls(name, options, captions, frames, golden, num_clips)

    def prefix(self, clip: int) -> str:
        """Golden names of split-clip cases start with `clip{c}_`; whole-video cases have one clip and none."""
        return f"clip{clip}_" if self.num_clips > 1 else ""


@dataclass
class StageRecorder:
    """Records the stages of one run of `case` into `tensors`, under the golden names."""

    case: GoldenCase
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    colour_fix_inputs: list[torch.Tensor] = field(default_factory=list)  # per clip, [F, C, H, W]
    merges: int = 0
    hook: torch.utils.hooks.RemovableHandle | None = None

    def install(self, models, monkeypatch) -> None:
        """Wrap what the pipeline and sampler call by module attribute; hook the transformer."""
        for module, name in ((pipeline, "upscale_video"), (pipeline, "vae_input"), (sampler, "merge_clips"),
                             (pipeline, "decode_clip"), (pipeline, "adain_color_fix")):
            monkeypatch.setattr(module, name, getattr(self, f"_{name}")(getattr(module, name)))
        self.hook = models.transformer.register_forward_hook(self._first_transformer_call)

    def _upscale_video(self, upscale):
        def wrapper(video, factor):
            out = upscale(video, factor)
            self.tensors.setdefault("control_video_after_upscale_frame0", out[0].clone())
            return out
        return wrapper

    def _vae_input(self, vae_input):
        def wrapper(video, size):
            out = vae_input(video, size)
            self.tensors.setdefault("vae_input_frame0", out[0, :, 0].clone())
            return out
        return wrapper

    def _merge_clips(self, merge):
        def wrapper(clips, copies):
            self.merges += 1
            last = self.case.options.steps - 1
            if self.merges == last + 1:  # the reference saved the last step's outputs before merging
                for c, clip in enumerate(clips):
                    self.tensors[f"{self.case.prefix(c)}step{last}_latents_out"] = clip.latents.clone()
                    self.tensors[f"{self.case.prefix(c)}step{last}_old_pred_original_sample_out"] = (
                        clip.old_pred_original_sample.clone())
            return merge(clips, copies)
        return wrapper

    def _decode_clip(self, decode):
        def wrapper(models, source, plan, clip, state, color_fix):
            self.tensors[f"{self.case.prefix(clip.index)}latents_to_decode"] = state.latents.clone()
            return decode(models, source, plan, clip, state, color_fix)
        return wrapper

    def _adain_color_fix(self, color_fix):
        def wrapper(frames, reference):
            self.colour_fix_inputs.append(frames.clone())
            return color_fix(frames, reference)
        return wrapper

    def _first_transformer_call(self, module, args, output):
        self.tensors.setdefault("first_call_transformer_noise_pred", output.sample.clone())

    def on_prepared(self, prepared) -> None:
        for c, (cond, clip) in enumerate(zip(prepared.conditioning, prepared.initial.clips)):
            p = self.case.prefix(c)
            self.tensors[f"{p}control_latents"] = cond.control_latents.clone()
            self.tensors[f"{p}initial_latents"] = self.tensors[f"{p}step0_latents_in"] = clip.latents.clone()
            self.tensors[f"{p}prompt_embeds"] = cond.prompt_embeds.clone()
            self.tensors[f"{p}negative_prompt_embeds_tile0"] = cond.negative_prompt_embeds[0].clone()

    def on_step(self, state) -> None:
        for c, clip in enumerate(state.clips):
            p = self.case.prefix(c)
            self.tensors[f"{p}step{state.step}_latents_in"] = clip.latents.clone()
            if self.case.num_clips == 1:  # no merge: the step's outputs are the next step's inputs
                self.tensors[f"{p}step{state.step - 1}_latents_out"] = clip.latents.clone()
                self.tensors[f"{p}step{state.step - 1}_old_pred_original_sample_out"] = (
                    clip.old_pred_original_sample.clone())


def run_case(models, case: GoldenCase, monkeypatch) -> dict[str, torch.Tensor]:
    """Restore `case` through `restore_frames`, recording every stage -> {golden name: our tensor}."""
    recorder = StageRecorder(case)
    recorder.install(models, monkeypatch)
    source = ArraySource(list(case.input.astype(np.float32) / np.float32(255)))
    try:
        frames = np.stack(list(pipeline.restore_frames(
            models, source, case.captions, case.options, on_prepared=recorder.on_prepared, on_step=recorder.on_step,
        )))
    finally:
        recorder.hook.remove()
    tensors = recorder.tensors
    tensors["frames_before_colorfix"] = torch.cat(recorder.colour_fix_inputs).permute(0, 2, 3, 1)
    tensors["final_frames_after_colorfix"] = torch.from_numpy(frames)
    return tensors


def stage_of(name: str) -> str:
    """The stage (tolerance class) of a golden tensor name."""
    name = re.sub(r"^clip\d+_", "", name)
    step = re.match(r"step(\d+)_", name)
    if step is None:
        return "initial" if name == "initial_latents" else name
    index = int(step.group(1))
    if name.endswith("_latents_in"):  # the input of step i is the output of step i - 1
        return "initial" if index == 0 else f"step{index - 1}"
    return f"step{index}"


def stage_errors(case: GoldenCase, observed: dict[str, torch.Tensor]) -> dict[str, tuple[float, float]]:
    """(max |ours - golden|, RMS of ours - golden) per golden float tensor; a missing stage raises."""
    errors = {}
    for name, expected in case.golden.items():
        if not expected.is_floating_point() or re.sub(r"^clip\d+_", "", name) in NOT_OBSERVED:
            continue
        ours = observed[name].to(torch.float64)
        if ours.shape != expected.shape:
            errors[name] = (float("inf"), float("inf"))
            continue
        diff = ours - expected.to(torch.float64)
        errors[name] = (diff.abs().max().item(), diff.square().mean().sqrt().item())
    return errors


def excess(name: str, error: tuple[float, float]) -> float:
    """How many times over its stage's tolerance an error is (the worse of max and RMS; <= 1 passes)."""
    ratios = [e / t if t else (float("inf") if e else 0.0) for e, t in zip(error, TOLERANCES[stage_of(name)])]
    return max(ratios)


def mismatches(errors: dict[str, tuple[float, float]]) -> dict[str, float]:
    """{golden name: times over tolerance} of every stage that does not match."""
    return {name: excess(name, e) for name, e in errors.items() if excess(name, e) > 1}


def error_table(errors: dict[str, tuple[float, float]]) -> str:
    rows = sorted(errors.items(), key=lambda kv: (stage_of(kv[0]), kv[0]))
    return "\n".join(f"{stage_of(n):34s} {n:45s} max {m:.2e}  rms {r:.2e}  x{excess(n, (m, r)):.3g}"
                     for n, (m, r) in rows)


# Deliberate bugs the stage goldens must see (each test installs one, then compares).

def mutate_decode_gain(models, monkeypatch, gain: float = 0.8) -> None:
    """The VAE decoder's output times `gain` (the final colour fix renormalises it away)."""
    decode = models.vae.decode

    def scaled(*args, **kwargs):
        out = decode(*args, **kwargs)
        return type(out)(sample=out.sample * gain)

    monkeypatch.setattr(models.vae, "decode", scaled)


def mutate_cfg_order(monkeypatch) -> None:
    """The CFG batch as [positive, negative] instead of the reference's [negative, positive]."""
    predict = sampler.predict_noise

    def swapped(transformer, controlnet, latents, control, embeds, negative_embeds, *rest):
        return predict(transformer, controlnet, latents, control, negative_embeds, embeds, *rest)

    monkeypatch.setattr(sampler, "predict_noise", swapped)


def mutate_skip_merge(monkeypatch, step: int) -> None:
    """The temporal merge left out after step `step`."""
    merge, calls = sampler.merge_clips, iter(range(10**6))

    def skipping(clips, copies):
        if next(calls) != step:
            merge(clips, copies)

    monkeypatch.setattr(sampler, "merge_clips", skipping)


def mutate_merge_one_step_early(monkeypatch, steps: int) -> None:
    """The temporal merge run before each step instead of after it: on the initial noise, not after the last step."""
    merge, sample, calls = sampler.merge_clips, pipeline.sample_clips, iter(range(10**6))

    def early_merge(clips, copies):
        if next(calls) != steps - 1:
            merge(clips, copies)

    def sample_after_merging_noise(transformer, controlnet, solver, state, conditioning, tiles, copies, *rest, **kw):
        for copy in copies:
            dst, src = state.clips[copy.dst_clip], state.clips[copy.src_clip]
            dst.latents[:, slice(*copy.dst)] = src.latents[:, slice(*copy.src)]
        return sample(transformer, controlnet, solver, state, conditioning, tiles, copies, *rest, **kw)

    monkeypatch.setattr(sampler, "merge_clips", early_merge)
    monkeypatch.setattr(pipeline, "sample_clips", sample_after_merging_noise)
