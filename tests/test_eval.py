"""`vividvr eval`: known answers for PSNR/SSIM, warping error and flicker; files, errors, LPIPS."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from typer.testing import CliRunner

from extras import import_or_skip
from quality_clips import H, W, noisy, pan, read_frames, write_clip
from vividcli.cli import app

runner = CliRunner()
FRAMES = 10


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval")
    paths = {"pan": folder / "pan.mkv", "noise": folder / "noise.mkv", "pan_mp4": folder / "pan.mp4"}
    write_clip(paths["pan"], pan(), FRAMES)
    write_clip(paths["noise"], noisy(), FRAMES)
    write_clip(paths["pan_mp4"], pan(), FRAMES)  # H.264: close to the lossless pan, not equal
    return paths


def eval_json(*args: str) -> dict:
    result = runner.invoke(app, ["eval", *args, "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_identical_videos_psnr_capped_and_said_so_ssim_one(clips):
    summary = eval_json(str(clips["pan"]), "--ref", str(clips["pan"]))
    assert summary["frames"] == FRAMES
    assert summary["psnr"] == summary["psnr_y"] == summary["psnr_cap_db"] == 100.0
    assert summary["psnr_capped_frames"] == FRAMES
    assert any("infinite" in note for note in summary["notes"])
    assert summary["ssim"] == pytest.approx(1.0, abs=1e-7) and summary["ssim_y"] == pytest.approx(1.0, abs=1e-7)
    for key in ("warp_error", "flicker"):
        assert key in summary


def test_psnr_and_ssim_equal_scikit_image_on_the_same_frames(clips, tmp_path):
    per_frame = tmp_path / "frames.json"
    summary = eval_json(str(clips["pan_mp4"]), "--ref", str(clips["pan"]), "--per-frame", str(per_frame))
    records = json.loads(per_frame.read_text())["frames"]
    out, ref = read_frames(clips["pan_mp4"]), read_frames(clips["pan"])
    assert len(records) == FRAMES
    for record, o, r in zip(records, out, ref):
        assert record["psnr"] == pytest.approx(peak_signal_noise_ratio(r, o, data_range=1.0), abs=1e-9)
        expected = structural_similarity(r, o, data_range=1.0, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False)
        assert record["ssim"] == pytest.approx(expected, abs=1e-5)
        yr, yo = rgb2ycbcr(r)[..., 0] / 255, rgb2ycbcr(o)[..., 0] / 255  # BT.601 studio-swing luma
        assert record["psnr_y"] == pytest.approx(peak_signal_noise_ratio(yr, yo, data_range=1.0), abs=1e-3)
        expected_y = structural_similarity(yr, yo, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                           use_sample_covariance=False)
        assert record["ssim_y"] == pytest.approx(expected_y, abs=1e-5)
    assert summary["psnr"] == pytest.approx(np.mean([r["psnr"] for r in records]))
    assert 30 < summary["psnr"] < 100 and 0.9 < summary["ssim"] < 1


def test_translation_has_near_zero_warping_error_while_noise_scores_high(clips):
    moving = eval_json(str(clips["pan"]))
    noise = eval_json(str(clips["noise"]))
    assert moving["flow_from"] == "output" and moving["psnr"] is None
    assert moving["warp_error"] < 2e-4
    assert noise["warp_error"] > 50 * moving["warp_error"] and noise["warp_error"] > 5e-3
    assert moving["flicker"] < 0.2  # 8-bit levels


def test_flicker_index_sees_brightness_pumping(tmp_path):
    still = pan(0)(0)
    path = tmp_path / "pumping.mkv"
    write_clip(path, lambda t: np.clip(still * (1.0 + 0.08 * (t % 2)), 0, 1), FRAMES)
    summary = eval_json(str(path))
    assert summary["flicker"] > 5  # about 0.08 x mean level x 255 / frame
    assert summary["warp_error"] > 1e-3


def test_per_frame_csv_plot_and_input_column(clips, tmp_path):
    csv_path, plot = tmp_path / "frames.csv", tmp_path / "curves.png"
    summary = eval_json(str(clips["pan_mp4"]), "--ref", str(clips["pan"]), "--input", str(clips["noise"]),
                        "--per-frame", str(csv_path), "--plot", str(plot))
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == FRAMES and rows[0]["warp_error"] == "" and float(rows[1]["warp_error"]) >= 0
    assert {"psnr", "ssim_y", "flicker", "input_psnr", "input_warp_error"} <= set(rows[0])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["input"]["psnr"] < summary["psnr"] and summary["input"]["warp_error"] > summary["warp_error"]
    assert summary["flow_from"] == "ref"


def test_table_on_the_terminal(clips):
    result = runner.invoke(app, ["eval", str(clips["pan_mp4"]), "--ref", str(clips["pan"])])
    assert result.exit_code == 0, result.output
    assert "PSNR RGB (dB)" in result.stdout and "warping error" in result.stdout
    assert "LPIPS skipped" in result.stdout  # one-line note, no download


def test_mismatched_sizes_and_lengths_are_one_error_or_aligned(clips, tmp_path):
    small, short = tmp_path / "small.mkv", tmp_path / "short.mkv"
    write_clip(small, pan(2, W // 2, H // 2), FRAMES)
    write_clip(short, pan(), FRAMES - 3)
    for other, word in ((small, "--align"), (short, "--align")):
        result = runner.invoke(app, ["eval", str(other), "--ref", str(clips["pan"])])
        assert result.exit_code == 1 and word in result.stderr
        assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    aligned = eval_json(str(small), "--ref", str(clips["pan"]), "--align")
    assert (aligned["width"], aligned["height"]) == (W, H) and aligned["notes"]
    assert eval_json(str(short), "--ref", str(clips["pan"]), "--align")["frames"] == FRAMES - 3


@pytest.mark.parametrize("args", [["--per-frame", "x.txt"], ["--plot", "x.jpg"], ["--lpips-weights", "none.pth"]])
def test_usage_errors_exit_2(clips, tmp_path, args):
    args = [str(tmp_path / a) if "." in a else a for a in args]
    result = runner.invoke(app, ["eval", str(clips["pan"]), "--ref", str(clips["pan"]), *args])
    assert result.exit_code == 2 and result.stderr.startswith("error: ")
    assert list(tmp_path.iterdir()) == []


def test_existing_per_frame_file_is_kept_without_overwrite(clips, tmp_path):
    existing = tmp_path / "frames.csv"
    existing.write_text("mine")
    result = runner.invoke(app, ["eval", str(clips["pan"]), "--per-frame", str(existing)])
    assert result.exit_code == 1 and "--overwrite" in result.stderr and existing.read_text() == "mine"
    assert runner.invoke(app, ["eval", str(clips["pan"]), "--per-frame", str(existing), "--overwrite",
                               "-q"]).exit_code == 0
    assert existing.read_text().startswith("frame,")


def test_a_bad_input_fails_in_one_line(clips, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    result = runner.invoke(app, ["eval", str(bad), "--ref", str(clips["pan"]), "--per-frame",
                                 str(tmp_path / "f.csv")])
    assert result.exit_code == 1 and result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "f.csv").exists()


def test_lpips_from_a_weights_file(clips, tmp_path):
    import_or_skip("lpips", "LPIPS needs the lpips extra")
    torch = import_or_skip("torch", "LPIPS needs torch")
    torchvision = import_or_skip("torchvision", "LPIPS needs torchvision")
    torch.manual_seed(0)
    weights = tmp_path / "alexnet.pth"  # random weights in torchvision's layout: the loading path, not the values
    state = torchvision.models.alexnet().state_dict()
    torch.save({k: v for k, v in state.items() if k.startswith("features.")}, weights)
    same = eval_json(str(clips["pan"]), "--ref", str(clips["pan"]), "--lpips-weights", str(weights))
    other = eval_json(str(clips["noise"]), "--ref", str(clips["pan"]), "--lpips-weights", str(weights))
    assert same["lpips"] == pytest.approx(0.0, abs=1e-6) and other["lpips"] > 0
    broken = tmp_path / "broken.pth"
    broken.write_bytes(os.urandom(64))
    result = runner.invoke(app, ["eval", str(clips["pan"]), "--ref", str(clips["pan"]), "--lpips-weights",
                                 str(broken)])
    assert result.exit_code == 1 and "lpips-weights" in result.stderr
