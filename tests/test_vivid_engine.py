"""The vivid engine on a tiny random checkpoint: options that must change the output do, it runs
through the same CLI path as every engine (real video file in, real video file out), and a resumed
run reuses the cached conditioning (no VAE encode, no T5) with identical output."""

from __future__ import annotations

import json
import signal
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vividcli.cache.store import JobCache
from vividcli.cli import app
from vividcli.config import RestoreOptions
from vividcli.engines.vivid import VividEngine, VividSettings
from vividcli.errors import UsageError
from vividcli.interrupt import Interrupted
from vividcli.media.probe import probe
from vividcli.media.reader import ArraySource, open_source
from vividcli.models.loading import load_models
from vividcli.pipeline import restore_frames
from vividcli.planning.plan import plan_restoration
from vividcli.progress import NullProgress
from vividcli.sampling.sampler import ClipState, DenoiseState
from vividcli.testing.media import make_av_mp4

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
    result = CliRunner().invoke(app, ["caption", str(src), "-o", str(captions), *tiling, "--captioner", "none"])
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


# ------------------------------------------------------------------ resuming without encoding again


class EncoderSpy:
    """Counts VAE-encode and T5 calls of the shared tiny models (patched on the instances)."""

    def __init__(self, models, monkeypatch):
        self.calls = {"vae.encode": 0, "text_encoder": 0}
        targets = ((models.vae, "encode", "vae.encode"), (models.text_encoder, "forward", "text_encoder"))
        for obj, method, label in targets:
            original = getattr(obj, method)

            def call(*args, _original=original, _label=label, **kwargs):
                self.calls[_label] += 1
                return _original(*args, **kwargs)

            monkeypatch.setattr(obj, method, call)

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def test_restore_frames_with_saved_conditioning_skips_encoding(tiny_models, frames, baseline, monkeypatch):
    """The Python API: `on_prepared` hands out the conditioning, which a resumed run reuses."""
    plan = plan_restoration(len(frames), 32, 48, OPTIONS)
    captions = [["a test clip"] * len(plan.tiles) for _ in plan.clips]
    prepared, states = [], {}

    def on_step(state):
        states[state.step] = DenoiseState(state.step, [ClipState(c.latents.clone(), c.old_pred_original_sample.clone())
                                                        for c in state.clips], state.generator_state.clone())

    out = list(restore_frames(tiny_models, ArraySource(frames), captions, OPTIONS,
                              on_prepared=prepared.append, on_step=on_step))
    assert np.array_equal(np.stack(out), baseline) and len(prepared) == 1 and sorted(states) == [1, 2, 3]
    spy = EncoderSpy(tiny_models, monkeypatch)
    resumed = restore_frames(tiny_models, ArraySource(frames), captions, OPTIONS, resume=states[1],
                             conditioning=prepared[0].conditioning, on_prepared=prepared.append)
    assert np.array_equal(np.stack(list(resumed)), baseline)
    assert spy.total == 0 and len(prepared) == 1
    with pytest.raises(ValueError, match="needs the saved denoising state"):
        next(restore_frames(tiny_models, ArraySource(frames), captions, OPTIONS, conditioning=prepared[0].conditioning))
    with pytest.raises(ValueError, match="does not fit"):
        next(restore_frames(tiny_models, ArraySource(frames), captions, OPTIONS, resume=states[1],
                            conditioning=prepared[0].conditioning[:1]))


class StopDuringStep(NullProgress):
    """Progress that asks the engine to stop (like a Ctrl-C) while the state of `step` is computed.

    Step 0 is the initial state, saved right after encoding: the stop is asked for from the start.
    """

    def __init__(self, step: int, tiles_per_step: int):
        self.interrupt = SimpleNamespace(requested=step == 0, signum=signal.SIGINT)
        self.after_tiles = (step - 1) * tiles_per_step
        self.stage_name, self.tiles = "", 0

    def stage(self, name, total):
        self.stage_name = name

    def advance(self, n=1):
        if self.stage_name == "denoise":
            self.tiles += n
            self.interrupt.requested |= self.tiles > self.after_tiles


@pytest.fixture
def png_input(tmp_path, frames):
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray((f * 255).round().astype(np.uint8)).save(folder / f"frame{i:03d}.png")
    return folder


def vivid_engine(tiny_ckpt_dir, tiny_models, cache_dir, messages, **settings):
    engine = VividEngine(VividSettings(tiny_ckpt_dir, OPTIONS, caption="a test clip", cache_dir=cache_dir, **settings),
                         say=messages.append)
    engine._models = tiny_models  # loaded once for the module
    return engine


def interrupted_run(tiny_ckpt_dir, tiny_models, png_input, cache_dir, stop_at: int) -> list[str]:
    messages: list[str] = []
    engine = vivid_engine(tiny_ckpt_dir, tiny_models, cache_dir, messages)
    plan = plan_restoration(len(list(png_input.iterdir())), 32, 48, OPTIONS)
    progress = StopDuringStep(stop_at, len(plan.clips) * len(plan.tiles))
    engine.interrupt = progress.interrupt
    with pytest.raises(Interrupted):
        list(engine.restore(open_source(png_input), progress))
    return messages


def job_entries(cache_dir) -> dict[str, dict]:
    (job,) = (cache_dir / "jobs").iterdir()
    return {p.stem: json.loads(p.read_bytes()) for p in (job / "entries").glob("*.json")}


@pytest.mark.parametrize("stop_at", [0, 2])
def test_resumed_engine_run_encodes_nothing_and_matches(tmp_path, tiny_ckpt_dir, tiny_models, png_input, monkeypatch,
                                                        stop_at):
    reference = np.stack(list(vivid_engine(tiny_ckpt_dir, tiny_models, None, [], use_cache=False)
                              .restore(open_source(png_input))))
    cache_dir = tmp_path / "cache"
    interrupted_run(tiny_ckpt_dir, tiny_models, png_input, cache_dir, stop_at)
    entries = job_entries(cache_dir)
    assert entries["state"]["meta"]["step"] == stop_at
    assert sorted(n for n in entries if n.startswith("conditioning-")) == [f"conditioning-clip000{i}" for i in (0, 1)]
    spy = EncoderSpy(tiny_models, monkeypatch)
    messages: list[str] = []
    out = np.stack(list(vivid_engine(tiny_ckpt_dir, tiny_models, cache_dir, messages).restore(open_source(png_input))))
    assert f"resuming at step {stop_at}/{OPTIONS.steps}" in messages, messages
    assert spy.calls == {"vae.encode": 0, "text_encoder": 0}
    assert np.array_equal(out, reference)
    # Done without --keep-cache: the bulky entries (state, conditioning) are gone, the JSON stays.
    assert not [n for n, e in job_entries(cache_dir).items() if e["kind"] != "json"]
    assert not list(cache_dir.glob("jobs/*/entries/*.safetensors"))


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_damaged_conditioning_is_detected_and_recomputed(tmp_path, tiny_ckpt_dir, tiny_models, png_input, monkeypatch,
                                                         damage):
    reference = np.stack(list(vivid_engine(tiny_ckpt_dir, tiny_models, None, [], use_cache=False)
                              .restore(open_source(png_input))))
    cache_dir = tmp_path / "cache"
    interrupted_run(tiny_ckpt_dir, tiny_models, png_input, cache_dir, 1)
    (job,) = (cache_dir / "jobs").iterdir()
    data = job / "entries" / job_entries(cache_dir)["conditioning-clip0001"]["file"]
    raw = bytearray(data.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0x10
        data.write_bytes(bytes(raw))
    elif damage == "truncate":
        data.write_bytes(bytes(raw[: len(raw) // 2]))
    else:
        data.unlink()
    spy = EncoderSpy(tiny_models, monkeypatch)
    messages: list[str] = []
    engine = vivid_engine(tiny_ckpt_dir, tiny_models, cache_dir, messages, keep_cache=True)
    out = np.stack(list(engine.restore(open_source(png_input))))
    problem = {"flip": "corrupt", "truncate": "truncated", "delete": "missing its data file"}[damage]
    assert any("'conditioning-clip0001'" in m and problem in m and "recomputed" in m for m in messages), messages
    assert f"resuming at step 1/{OPTIONS.steps}" in messages, messages  # the state is kept, only encoding is redone
    assert spy.calls["vae.encode"] > 0 and spy.calls["text_encoder"] > 0
    assert np.array_equal(out, reference)
    # --keep-cache: the recomputed conditioning is saved again, whole and valid, beside the final state.
    cache = JobCache(job)
    for i in range(2):
        got = cache.get_tensors(f"conditioning-clip{i:04d}")
        assert got is not None and sorted(got[0]) == ["control_latents", "negative_prompt_embeds", "prompt_embeds"]
    assert job_entries(cache_dir)["state"]["meta"]["step"] == OPTIONS.steps
