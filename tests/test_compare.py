"""`vividvr compare`: layouts, labels, crops, contact sheets, timing and audio, errors."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from quality_clips import H, W, noisy, pan, read_frames, stream_types, write_clip
from vividcli.cli import app
from vividcli.media.probe import probe
from vividcli.quality.layout import GAP, Layout

runner = CliRunner()
FRAMES = 8


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    paths = {"a": folder / "a.mp4", "b": folder / "b.mkv", "small": folder / "small.mkv", "c": folder / "c.mkv"}
    write_clip(paths["a"], pan(), FRAMES, fps=Fraction(30000, 1001), audio=True)
    write_clip(paths["b"], noisy(), FRAMES)
    write_clip(paths["small"], pan(2, W // 2, H // 2), FRAMES)
    write_clip(paths["c"], pan(1), FRAMES)
    return paths


def compare(*args: str) -> dict:
    result = runner.invoke(app, ["compare", *args, "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_side_by_side_keeps_timing_and_audio_of_the_first_input(clips, tmp_path):
    out = tmp_path / "side.mp4"
    summary = compare(str(clips["a"]), str(clips["small"]), "-o", str(out), "--codec", "libx264", "--crf", "0")
    info, first = probe(out), probe(clips["a"])
    assert (info.width, info.height) == (2 * W + GAP, H) == (summary["width"], summary["height"])
    assert (info.num_frames, info.fps, info.duration) == (first.num_frames, first.fps, first.duration)
    assert stream_types(out) == ["video", "audio"]
    frame = read_frames(out)[3]
    left, right = frame[:, :W], frame[:, W + GAP:]
    src = read_frames(clips["a"])[3]
    below_label = slice(H // 2, H)  # the label sits in the top-left corner of each panel
    assert np.abs(left[below_label] - src[below_label]).mean() < 0.03
    assert right.shape == (H, W, 3)  # the 32x24 input is enlarged to the panel size


def test_labels_are_drawn_in_the_bundled_font(clips, tmp_path):
    plain = Layout("side", ["", ""], W, H).compose([np.zeros((H, W, 3), np.float32)] * 2, 0)
    labelled = Layout("side", ["clean", "restored"], W, H).compose([np.zeros((H, W, 3), np.float32)] * 2, 0)
    corner = labelled[: H // 3, : W // 2]
    assert corner.max() > 0.8 and not np.array_equal(plain, labelled)  # white text on black
    assert labelled[H // 2:].max() == 0  # nothing outside the label box


def test_grid_split_and_slider_layouts(clips, tmp_path):
    three = [str(clips["a"]), str(clips["b"]), str(clips["c"])]
    grid = compare(*three, "-o", str(tmp_path / "grid.mp4"), "--layout", "grid")
    assert (grid["width"], grid["height"]) == (2 * W + GAP, 2 * H + GAP)
    split = compare(*three, "-o", str(tmp_path / "split.mkv"), "--layout", "split", "--codec", "ffv1")
    assert (split["width"], split["height"]) == (W, H)
    frame = read_frames(tmp_path / "split.mkv")[0]
    b = read_frames(clips["b"])[0]
    middle = slice(W // 3 + 3, 2 * W // 3 - 3)
    assert np.abs(frame[H // 2:, middle] - b[H // 2:, middle]).max() < 2 / 255  # the middle strip is input b
    layout = Layout("slider", ["a", "b"], W, H, fps=24)
    positions = [layout.boundaries(t)[0] for t in range(0, 96, 8)]
    assert len(set(positions)) > 4 and min(positions) >= 0 and max(positions) <= W


def test_crop_and_zoom_magnify_with_nearest_neighbour(clips, tmp_path):
    out = tmp_path / "crop.mkv"
    summary = compare(str(clips["b"]), str(clips["c"]), "-o", str(out), "--crop", "20,10,16,12", "--zoom", "3",
                      "--codec", "ffv1")
    assert (summary["width"], summary["height"]) == (2 * 48 + GAP, 36)
    frame = read_frames(out)[0]
    crop = read_frames(clips["b"])[0][10:22, 20:36]
    expected = np.repeat(np.repeat(crop, 3, axis=0), 3, axis=1)
    assert np.abs(frame[18:36, :48] - expected[18:36]).max() < 2 / 255


def test_contact_sheet_png(clips, tmp_path):
    out = tmp_path / "sheet.png"
    summary = compare(str(clips["a"]), str(clips["b"]), "-o", str(out), "--png", "--frames", "0,5")
    image = np.asarray(Image.open(out))
    assert image.shape == (2 * H + 4, 2 * W + GAP, 3) and summary["frames"] == [0, 5]
    default = compare(str(clips["a"]), str(clips["b"]), "-o", str(tmp_path / "four.png"), "--png")
    assert default["frames"] == [0, 2, 5, 7]


def test_frame_counts_must_match_unless_aligned(clips, tmp_path):
    short = tmp_path / "short.mkv"
    write_clip(short, pan(), FRAMES - 3)
    out = tmp_path / "out.mp4"
    result = runner.invoke(app, ["compare", str(clips["a"]), str(short), "-o", str(out)])
    assert result.exit_code == 1 and "--align" in result.stderr and not out.exists()
    compare(str(clips["a"]), str(short), "-o", str(out), "--align")
    assert probe(out).num_frames == FRAMES - 3


@pytest.mark.parametrize("args", [[], ["--layout", "slider", "C"], ["--layout", "mosaic"], ["--crop", "1,2,3"],
                                  ["--crop", "60,40,20,20"], ["--frames", "1,2"], ["--png"], ["--zoom", "0"],
                                  ["--labels", "one"], ["--png", "--frames", "99", "-o", "x.png"]])
def test_usage_errors_exit_2(clips, tmp_path, args):
    args = [str(clips["c"]) if a == "C" else str(tmp_path / a) if a == "x.png" else a for a in args]
    output = [] if "-o" in args else ["-o", str(tmp_path / "out.mp4")]
    result = runner.invoke(app, ["compare", str(clips["a"]), *([] if args == [] else [str(clips["b"])]), *args,
                                 *output])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_an_existing_output_is_kept_without_overwrite(clips, tmp_path):
    out = tmp_path / "out.png"
    out.write_bytes(b"keep")
    result = runner.invoke(app, ["compare", str(clips["a"]), str(clips["b"]), "-o", str(out), "--png"])
    assert result.exit_code == 1 and "--overwrite" in result.stderr and out.read_bytes() == b"keep"
    compare(str(clips["a"]), str(clips["b"]), "-o", str(out), "--png", "--overwrite")
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_a_bad_input_fails_in_one_line_and_writes_nothing(clips, tmp_path):
    bad = tmp_path / "bad.mkv"
    bad.write_text("nope")
    result = runner.invoke(app, ["compare", str(clips["a"]), str(bad), "-o", str(tmp_path / "out.mp4")])
    assert result.exit_code == 1 and result.stderr.startswith("error: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mkv"]
