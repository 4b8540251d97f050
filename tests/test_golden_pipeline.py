"""Golden cases c-g end to end: the reference's restored frames, through the Python API and the CLI.

Criterion (issue): PSNR >= 50 dB between our uint8-rounded frames and the golden frames (after
colour fix) rounded to uint8. We run the control feature projectors once per tile and step instead
of on both identical CFG halves, which sums some convolutions in another order (~2e-6 per value)
and CFG amplifies it over the steps: measured 56.6-77.8 dB on the CI machine (uint8 max 1-3 levels;
the module forwards of case a are still bit-identical).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import load_file
from typer.testing import CliRunner

from vividcli.cli import app
from vividcli.config import RestoreOptions
from vividcli.media.reader import ArraySource
from vividcli.models.loading import load_models
from vividcli.pipeline import restore_frames
from vividcli.planning.plan import plan_restoration

CASES = [
    "case_c_whole_video",
    "case_d_temporal_aggregation",
    "case_e_whole_video_rgs",
    "case_f_whole_video_frame_padding",
    "case_g_temporal_aggregation_padding",
]

pytestmark = pytest.mark.slow


def to_uint8(frames: np.ndarray) -> np.ndarray:
    return np.round(np.clip(frames, 0, 1) * 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


class Case:
    def __init__(self, reference_dir: Path, name: str):
        self.meta = json.loads((reference_dir / "golden" / f"{name}.json").read_text())
        self.golden = load_file(reference_dir / "golden" / f"{name}.safetensors")
        self.input = np.load(reference_dir / "inputs" / self.meta["input_file"])
        args = self.meta["args"]
        self.options = RestoreOptions(
            upscale=args["upscale"], tile_size=args["tile_size"], clip_frames=args["num_temporal_process_frames"],
            steps=args["num_inference_steps"], guidance=args["guidance_scale"], seed=args["seed"],
            restoration_guidance=args["restoration_guidance_scale"], dynamic_cfg=args["use_dynamic_cfg"],
        )
        num_clips = len(plan_restoration(*self.input.shape[:3], self.options).clips)
        calls = self.meta["captioner_calls"]
        self.captions = [[c["caption"] for c in calls if c["clip"] == clip] for clip in range(num_clips)]

    @property
    def expected(self) -> np.ndarray:
        return to_uint8(self.golden["final_frames_after_colorfix"])

    def cli_args(self) -> list[str]:
        o = self.options
        return ["--upscale", str(o.upscale), "--tile-size", str(o.tile_size), "--clip-frames", str(o.clip_frames),
                "--steps", str(o.steps), "--guidance", str(o.guidance), "--seed", str(o.seed),
                "--restoration-guidance", str(o.restoration_guidance), "--device", "cpu", "--dtype", "float32",
                "--fidelity", "1.0",  # the paper's ControlNet scale is the reference's path
                "--dynamic-cfg" if o.dynamic_cfg else "--no-dynamic-cfg"]


@pytest.fixture(scope="module")
def models(reference_ckpt_dir):
    torch.set_num_threads(2)
    return load_models(reference_ckpt_dir, torch.float32, "cpu")


@pytest.mark.parametrize("name", CASES)
def test_golden_case_through_python_api(reference_dir, models, name):
    case = Case(reference_dir, name)
    source = ArraySource(list(case.input.astype(np.float32) / np.float32(255)))
    frames = np.stack(list(restore_frames(models, source, case.captions, case.options)))
    assert frames.shape == case.golden["final_frames_after_colorfix"].shape
    assert psnr(to_uint8(frames), case.expected) >= 50


@pytest.mark.parametrize("name", CASES)
def test_golden_case_through_cli(reference_dir, reference_ckpt_dir, tmp_path, name):
    case = Case(reference_dir, name)
    frames_dir = tmp_path / "input"
    frames_dir.mkdir()
    for i, frame in enumerate(case.input):
        Image.fromarray(frame).save(frames_dir / f"{i:04d}.png")
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps(case.captions))
    out = tmp_path / "restored"
    result = CliRunner().invoke(app, [
        "restore", str(frames_dir), "-o", str(out), "--ckpt-dir", str(reference_ckpt_dir),
        "--captions-file", str(captions), "--cache-dir", str(tmp_path / "cache"), "--quiet", *case.cli_args(),
    ])
    assert result.exit_code == 0, result.output
    written = sorted(out.glob("*.png"))
    assert len(written) == case.input.shape[0]
    ours = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in written])
    assert ours.shape == case.expected.shape
    assert psnr(ours, case.expected) >= 50
