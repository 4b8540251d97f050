"""`vividvr degrade`: presets ordered, deterministic, streaming, timing and audio kept, errors."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
from skimage.metrics import mean_squared_error
from typer.testing import CliRunner

from quality_clips import noisy, pan, read_frames, stream_types, write_clip
from vividcli.cli import app
from vividcli.media.probe import probe
from vividcli.quality.degrade import DegradeConfig, degrade_stream, degrade_video
from vividcli.quality.presets import STRUCTURAL
from vividcli.quality.structural import StructuralDegrader
from vividcli.quality.tracks import SmoothField, SmoothScalar

runner = CliRunner()


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    path = tmp_path_factory.mktemp("degrade") / "clean.mkv"
    write_clip(path, pan(), 20)
    return path


def psnr_of(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    mse = np.mean([mean_squared_error(x, y) for x, y in zip(a, b)])
    return float(10 * np.log10(1 / mse))


def test_presets_are_ordered_by_psnr_drop(clean, tmp_path):
    reference = read_frames(clean)
    drops = {}
    for preset in ("light", "medium", "strong"):
        out = tmp_path / f"{preset}.mkv"  # FFV1: lossless, so only the degradation is measured
        degrade_video(DegradeConfig.from_options(input=clean, output=out, preset=preset, seed=5, codec="ffv1"))
        drops[preset] = psnr_of(reference, read_frames(out))
    assert drops["light"] > drops["medium"] > drops["strong"], drops
    assert drops["light"] < 60  # it did degrade


def test_same_seed_is_bit_identical_other_seed_differs(clean, tmp_path):
    for preset in ("strong", "realworld"):  # realworld: noise, JPEG and the libx264 pass too
        paths = [tmp_path / f"{preset}{i}.mp4" for i in range(3)]
        for path, seed in zip(paths, (7, 7, 8)):
            result = runner.invoke(app, ["degrade", str(clean), "-o", str(path), "--preset", preset,
                                         "--seed", str(seed), "--quiet"])
            assert result.exit_code == 0, result.output
        assert paths[0].read_bytes() == paths[1].read_bytes()
        assert paths[0].read_bytes() != paths[2].read_bytes()


def test_frame_count_timing_and_audio_are_kept(tmp_path):
    src = tmp_path / "ntsc.mp4"
    write_clip(src, pan(), 15, fps=Fraction(30000, 1001), audio=True)
    out = tmp_path / "out.mp4"
    result = runner.invoke(app, ["degrade", str(src), "-o", str(out), "--preset", "strong", "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    a, b = probe(src), probe(out)
    assert (b.num_frames, b.fps, b.duration) == (a.num_frames, a.fps, a.duration) == (15, Fraction(30000, 1001),
                                                                                    Fraction(15 * 1001, 30000))
    assert summary["frames"] == 15 and (summary["width"], summary["height"]) == (64, 48)
    assert stream_types(out) == ["video", "audio"]
    no_audio = tmp_path / "silent.mp4"
    assert runner.invoke(app, ["degrade", str(src), "-o", str(no_audio), "--no-audio", "-q"]).exit_code == 0
    assert stream_types(no_audio) == ["video"]


def test_dropped_and_held_frames_repeat_the_previous_frame(clean, tmp_path):
    level = replace(STRUCTURAL["strong"], drop=0.3, hold=2, hold_share=1.0)
    degrader = StructuralDegrader(level, seed=1, width=64, height=48, fps=24)
    repeats = [degrader.repeats(t) for t in range(20)]
    assert not repeats[0] and 5 <= sum(repeats) < 19
    frames = list(degrader(iter(read_frames(clean))))
    assert len(frames) == 20
    for t in range(1, 20):
        assert np.array_equal(frames[t], frames[t - 1]) == repeats[t], t


def test_parameters_drift_smoothly(clean):
    degrader = StructuralDegrader(STRUCTURAL["medium"], seed=3, width=64, height=48, fps=24)
    fields = [degrader.displacement(t) for t in range(48)]
    size = np.mean([np.abs(f).mean() for f in fields])
    step = np.mean([np.abs(b - a).mean() for a, b in zip(fields, fields[1:])])
    assert step < 0.2 * size  # i.i.d. fields would change by about as much as their size
    track = SmoothScalar(0, "x", 0.0, 1.0, period=24)
    values = [track(t) for t in range(200)]
    assert max(abs(b - a) for a, b in zip(values, values[1:])) < 0.1 and 0 <= min(values) <= max(values) <= 1
    field = SmoothField(0, "f", (3, 4, 2), period=10)
    assert np.array_equal(field(17), SmoothField(0, "f", (3, 4, 2), period=10)(17))  # any order, any instance


@pytest.mark.parametrize("preset", ["strong", "realworld"])
def test_streaming_never_reads_ahead_more_than_a_few_frames(preset):
    """An endless input works: the chain holds a bounded number of frames (the codec pass's lookahead)."""
    consumed = itertools.count()
    endless = (noisy()(next(consumed)).astype(np.float32) for _ in itertools.count())
    config = DegradeConfig.from_options(input="in.mp4", output="out.mp4", preset=preset)
    out = list(itertools.islice(degrade_stream(endless, config, width=64, height=48, fps=24), 8))
    assert len(out) == 8 and out[0].shape == (48, 64, 3) and out[0].dtype == np.float32
    assert next(consumed) < 8 + 40


def test_scale_and_png_folder_output(clean, tmp_path):
    out = tmp_path / "frames"
    result = runner.invoke(app, ["degrade", str(clean), "-o", str(out), "--preset", "realworld", "--scale", "0.5",
                                 "-q"])
    assert result.exit_code == 0, result.output
    files = sorted(out.glob("*.png"))
    assert len(files) == 20 and read_frames(out)[0].shape == (24, 32, 3)


def test_a_bad_input_fails_in_one_line_and_writes_nothing(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_text("not a video")
    out = tmp_path / "out.mp4"
    result = runner.invoke(app, ["degrade", str(bad), "-o", str(out)])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.mp4"]


@pytest.mark.parametrize("args", [["--preset", "bogus"], ["--structural", "huge"], ["--seed", "-1"],
                                  ["--scale", "0"], ["--crf", "99"], ["-o", "x.avi"], ["-o", "frames", "--crf", "20"]])
def test_usage_errors_exit_2_before_any_work(clean, tmp_path, args):
    argv = ["degrade", str(clean), "-o", str(tmp_path / "out.mp4"), *args]
    if "-o" in args:
        argv = ["degrade", str(clean), *[str(tmp_path / a) if a in ("x.avi", "frames") else a for a in args]]
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_an_existing_output_is_kept_without_overwrite(clean, tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"keep me")
    result = runner.invoke(app, ["degrade", str(clean), "-o", str(out), "-q"])
    assert result.exit_code == 1 and "--overwrite" in result.stderr
    assert out.read_bytes() == b"keep me"
    assert runner.invoke(app, ["degrade", str(clean), "-o", str(out), "-q", "--overwrite"]).exit_code == 0
    assert probe(out).num_frames == 20
