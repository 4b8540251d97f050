"""The vivid engine on a tiny random checkpoint: options that must change the output do, and it
runs through the same CLI path as every engine (real video file in, real video file out)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from media_factory import make_av_mp4
from vividcli.cli import app
from vividcli.config import RestoreOptions
from vividcli.errors import UsageError
from vividcli.media.probe import probe
from vividcli.media.reader import ArraySource
from vividcli.models.loading import load_models
from vividcli.pipeline import plan_restoration, restore_frames

OPTIONS = RestoreOptions(upscale=1.0, tile_size=4, clip_frames=9, steps=3, seed=7)


@pytest.fixture(scope="module")
def tiny_models(tiny_ckpt_dir):
    return load_models(tiny_ckpt_dir, torch.float32, "cpu")


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    return [rng.random((32, 48, 3), dtype=np.float32) for _ in range(13)]


def run(models, frames, options):
    plan = plan_restoration(len(frames), 32, 48, options)
    captions = [["a test clip"] * len(plan.tiles) for _ in plan.clips]
    return np.stack(list(restore_frames(models, ArraySource(frames), captions, options)))


@pytest.fixture(scope="module")
def baseline(tiny_models, frames):
    return run(tiny_models, frames, OPTIONS)


def test_plan_uses_tiles_and_temporal_clips(frames):
    plan = plan_restoration(len(frames), 32, 48, OPTIONS)
    assert len(plan.tiles) > 1 and len(plan.clips) > 1


def test_output_shape_and_determinism(tiny_models, frames, baseline):
    assert baseline.shape == (13, 32, 48, 3) and np.isfinite(baseline).all()
    assert np.array_equal(run(tiny_models, frames, OPTIONS), baseline)


@pytest.mark.parametrize("change", [{"fidelity": 0.5}, {"seed": 8}, {"restoration_guidance": 1.5}])
def test_options_change_the_output(tiny_models, frames, baseline, change):
    other = run(tiny_models, frames, replace(OPTIONS, **change))
    assert other.shape == baseline.shape
    assert np.abs(other - baseline).max() > 1e-4


@pytest.mark.parametrize("captions", [[["one tile only"]] * 2, [["a", "b"]] * 5, []])
def test_captions_that_do_not_fit_the_plan_are_refused(tiny_models, frames, captions):
    plan = plan_restoration(len(frames), 32, 48, OPTIONS)
    assert (len(plan.clips), len(plan.tiles)) == (2, 2)
    with pytest.raises(UsageError, match="expected a list of 2 clip|expected 2"):
        next(restore_frames(tiny_models, ArraySource(frames), captions, OPTIONS))


def test_vivid_engine_through_cli_keeps_timing_and_audio(tmp_path, tiny_ckpt_dir):
    src = make_av_mp4(tmp_path / "in.mp4", num_frames=12)
    out = tmp_path / "out.mp4"
    result = CliRunner().invoke(app, [
        "restore", str(src), "-o", str(out), "--ckpt-dir", str(tiny_ckpt_dir), "--upscale", "1",
        "--tile-size", "4", "--clip-frames", "9", "--steps", "2", "--device", "cpu", "--caption", "a clip",
        "--cache-dir", str(tmp_path / "cache"), "--quiet",
    ])
    assert result.exit_code == 0, result.output
    a, b = probe(src), probe(out)
    assert (b.num_frames, b.fps, b.width, b.height) == (a.num_frames, a.fps, a.width, a.height)
    assert any(s.type == "audio" for s in b.streams)


def test_caption_command_writes_the_template_restore_reads(tmp_path, tiny_ckpt_dir):
    src = make_av_mp4(tmp_path / "in.mp4", num_frames=12)
    captions = tmp_path / "captions.json"
    tiling = ["--upscale", "1", "--tile-size", "4", "--clip-frames", "9"]
    result = CliRunner().invoke(app, ["caption", str(src), "-o", str(captions), *tiling])
    assert result.exit_code == 0, result.output
    data = json.loads(captions.read_text())
    plan = plan_restoration(12, probe(src).height, probe(src).width, replace(OPTIONS, seed=42))
    assert len(data) == len(plan.clips) and all(len(c) == len(plan.tiles) for c in data)
    data[0][0] = "an edited caption"
    captions.write_text(json.dumps(data))
    result = CliRunner().invoke(app, [
        "restore", str(src), "-o", str(tmp_path / "out"), "--ckpt-dir", str(tiny_ckpt_dir), *tiling,
        "--steps", "1", "--device", "cpu", "--captions-file", str(captions), "--cache-dir", str(tmp_path / "c"), "-q",
    ])
    assert result.exit_code == 0, result.output
    data[0].pop()
    captions.write_text(json.dumps(data))
    result = CliRunner().invoke(app, [
        "restore", str(src), "-o", str(tmp_path / "out2"), "--ckpt-dir", str(tiny_ckpt_dir), *tiling,
        "--steps", "1", "--device", "cpu", "--captions-file", str(captions), "--cache-dir", str(tmp_path / "c"),
    ])
    assert result.exit_code == 1 and "Traceback" not in result.output
