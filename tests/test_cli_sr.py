"""`--engine realesrgan` and `--textfix` through the real CLI: real files in and out, tiny Real-ESRGAN
networks in the official key layout, EasyOCR's real CRAFT weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from extras import import_or_skip
from test_realesrgan_engine import official_rrdbnet_state, save_official
from test_textfix import text_frame
from vividcli.cli import app
from vividcli.media.probe import probe
from vividcli.testing.media import make_av_mp4

REASON = "needs the textfix extra (spandrel, easyocr, torchvision): docs/textfix.md"


def restore(*args: str):
    return CliRunner().invoke(app, ["restore", *map(str, args)])


def write_pngs(folder: Path, frames: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True)
    for i, f in enumerate(frames):
        Image.fromarray(np.round(f * 255).astype(np.uint8)).save(folder / f"{i:04d}.png")
    return folder


def read_pngs(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))])


@pytest.fixture(scope="module")
def x2_model(tmp_path_factory) -> Path:
    import_or_skip("spandrel", REASON)
    return save_official(tmp_path_factory.mktemp("sr") / "x2.pth", official_rrdbnet_state(scale=2, seed=3))


@pytest.fixture(scope="module")
def box_ckpt_dir(tmp_path_factory) -> Path:
    """A checkpoint folder holding only RealESRGAN/RealESRGAN_x2plus.pth (a legible 2x2 box network)."""
    for name in ("spandrel", "easyocr", "easyocr_en_models"):
        import_or_skip(name, REASON)
    root = tmp_path_factory.mktemp("ckpt")
    (root / "RealESRGAN").mkdir()
    save_official(root / "RealESRGAN" / "RealESRGAN_x2plus.pth", official_rrdbnet_state(scale=2, kind="box"))
    return root


def test_realesrgan_engine_frames_match_the_model_and_timing_is_kept(tmp_path, x2_model):
    from vividcli.engines.realesrgan import RealESRGANEngine

    rng = np.random.default_rng(0)
    frames = [rng.random((20, 28, 3), dtype=np.float32) for _ in range(3)]
    src = write_pngs(tmp_path / "in", frames)
    result = restore(src, "-o", tmp_path / "out", "--engine", "realesrgan", "--sr-model", x2_model,
                     "--upscale", "2", "--fps", "25", "--device", "cpu", "-q")
    assert result.exit_code == 0, result.output
    got = read_pngs(tmp_path / "out")
    engine = RealESRGANEngine(x2_model, device="cpu")
    inputs = [np.asarray(Image.open(p)).astype(np.float32) / 255 for p in sorted(src.glob("*.png"))]
    want = np.stack([np.round(engine.upscale_frame(f) * 255) for f in inputs]).astype(np.uint8)
    assert got.shape == (3, 40, 56, 3) and got.std() > 5
    assert np.abs(got.astype(int) - want).max() <= 1  # PNG rounding of the same float frames

    video = make_av_mp4(tmp_path / "clip.mp4", num_frames=6)
    out = tmp_path / "clip_x3.mp4"
    result = restore(video, "-o", out, "--engine", "realesrgan", "--sr-model", x2_model, "--upscale", "3",
                     "--device", "cpu", "--sr-tile", "40", "-q")
    assert result.exit_code == 0, result.output
    a, b = probe(video), probe(out)
    assert (b.num_frames, b.fps, b.duration) == (a.num_frames, a.fps, a.duration)
    assert (b.width, b.height) == (3 * a.width, 3 * a.height)  # the x2 model's output resized to x3
    assert any(s.type == "audio" for s in b.streams)


def test_default_sr_model_comes_from_the_checkpoint_folder(tmp_path, box_ckpt_dir):
    video = make_av_mp4(tmp_path / "in.mp4", num_frames=3)
    result = restore(video, "-o", tmp_path / "out.mp4", "--engine", "realesrgan", "--ckpt-dir", box_ckpt_dir,
                     "--upscale", "2", "--device", "cpu", "-q")
    assert result.exit_code == 0, result.output
    result = restore(video, "-o", tmp_path / "out2.mp4", "--engine", "realesrgan", "--ckpt-dir", tmp_path / "none",
                     "--device", "cpu")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "vividvr models download --what textfix" in result.output and not (tmp_path / "out2.mp4").exists()


@pytest.mark.parametrize("args, message", [
    (["--engine", "realesrgan", "--textfix"], "drop --textfix"),
    (["--engine", "classic", "--sr-model", "model.pth"], "--sr-model is used by"),
    (["--engine", "realesrgan", "--sr-model", "missing.pth"], "does not exist"),
    (["--engine", "realesrgan", "--sr-tile", "-1"], "--sr-tile"),
    (["--engine", "realesrgan", "--sr-tile", "32"], "above 32 pixels"),
])
def test_super_resolution_usage_errors(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    Path("model.pth").write_bytes(b"x")
    video = make_av_mp4(tmp_path / "in.mp4", num_frames=2)
    result = restore(video, "-o", tmp_path / "out.mp4", *args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_textfix_replaces_text_regions_and_leaves_the_rest(tmp_path, box_ckpt_dir):
    """On the classic engine: far from the text the output is the classic output bit for bit; over the
    text it comes from the enhanced (box-filtered) input instead of the classic restoration."""
    frames = [text_frame(96, 256, "HELLO 42", at=(20, 25), size=36), text_frame(96, 256, "")]
    src = write_pngs(tmp_path / "in", frames)
    common = ["--engine", "classic", "--upscale", "1", "--fps", "24", "--device", "cpu", "-q"]
    assert restore(src, "-o", tmp_path / "plain", *common).exit_code == 0
    result = restore(src, "-o", tmp_path / "fixed", *common, "--textfix", "--ckpt-dir", box_ckpt_dir)
    assert result.exit_code == 0, result.output
    plain, fixed = read_pngs(tmp_path / "plain").astype(int), read_pngs(tmp_path / "fixed").astype(int)
    assert fixed.shape == plain.shape == (2, 96, 256, 3)
    np.testing.assert_array_equal(fixed[1], plain[1])  # no text: untouched
    ink = frames[0].mean(axis=2) < 0.5
    ys, xs = np.nonzero(ink)
    far = np.ones_like(ink)
    far[max(ys.min() - 20, 0): ys.max() + 21, max(xs.min() - 20, 0): xs.max() + 21] = False
    np.testing.assert_array_equal(fixed[0][far], plain[0][far])
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    assert np.abs(fixed[0][box] - plain[0][box]).mean() > 2  # the text region did change
    enhanced = frames[0].reshape(48, 2, 128, 2, 3).mean(axis=(1, 3)).repeat(2, 0).repeat(2, 1) * 255
    assert np.abs(fixed[0][box] - enhanced[box]).mean() < np.abs(plain[0][box] - enhanced[box]).mean()


@pytest.mark.slow
def test_textfix_on_the_vivid_engine_keeps_frames_and_timing(tmp_path, tiny_ckpt_dir, box_ckpt_dir):
    model = box_ckpt_dir / "RealESRGAN" / "RealESRGAN_x2plus.pth"
    src = make_av_mp4(tmp_path / "in.mp4", num_frames=5)
    out = tmp_path / "out.mp4"
    result = restore(src, "-o", out, "--ckpt-dir", tiny_ckpt_dir, "--textfix", "--sr-model", model,
                     "--upscale", "1", "--tile-size", "4", "--steps", "1", "--device", "cpu",
                     "--cache-dir", tmp_path / "cache", "-q")
    assert result.exit_code == 0, result.output
    a, b = probe(src), probe(out)
    assert (b.num_frames, b.fps, b.width, b.height) == (a.num_frames, a.fps, a.width, a.height)
