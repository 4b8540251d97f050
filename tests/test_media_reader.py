"""probe() and open_source(): exact counts and rates, geometry, precision, and one-line errors."""

from __future__ import annotations

import shutil
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from vividcli.errors import MediaError
from vividcli.media.probe import natural_key, probe
from vividcli.media.reader import ArraySource, open_source
from vividcli.testing.media import CREATION_TIME, TITLE, Media, pattern


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Media:
    return Media(tmp_path_factory.mktemp("media"))


def one_line_error(excinfo, *needles: str) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    for n in needles:
        assert n in msg, msg
    return msg


# ------------------------------------------------------------------------------ video files


def test_probe_mp4_with_audio_subtitles_and_tags(media):
    info = probe(media.av_mp4)
    assert (info.kind, info.width, info.height, info.num_frames) == ("video", 64, 48, 12)
    assert info.fps == Fraction(24) and isinstance(info.fps, Fraction)
    assert info.duration == Fraction(1, 2)
    assert (info.pix_fmt, info.bit_depth, info.has_alpha, info.is_gray) == ("yuv420p", 8, False, False)
    assert info.codec == "h264" and info.frame_count_source == "packets"
    assert not info.variable_frame_rate and info.rotation == 0
    assert [(s.type, s.codec, s.language) for s in info.streams] == [
        ("audio", "aac", "fra"), ("subtitle", "mov_text", "deu")]
    assert info.metadata["title"] == TITLE
    assert info.metadata["creation_time"] == CREATION_TIME
    assert info.stream_metadata["language"] == "eng"
    assert info.color.matrix == "bt601"  # untagged SD: guessed like players do


def test_frames_are_float32_rgb_in_order_and_exact_in_number(media):
    src = open_source(media.av_mp4)
    frames = list(src.frames())
    assert len(frames) == src.info.num_frames == len(src) == src.num_frames == 12
    assert (src.width, src.height) == (64, 48)  # what vividcli.pipeline's FrameSource protocol reads
    for i, f in enumerate(frames):
        assert f.dtype == np.float32 and f.shape == (48, 64, 3) and f.flags.c_contiguous
        assert 0.0 <= f.min() and f.max() <= 1.0
        # lossy H.264 4:2:0, but clearly the right frame, in the right order
        assert np.abs(f * 255 - pattern(i, 64, 48)).mean() < 4.0


def test_each_call_decodes_afresh_and_ranges_are_exact(media):
    src = open_source(media.av_mp4)
    first = list(src.frames())
    again = list(src.frames())
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    part = list(src.frames(3, 7))
    assert len(part) == 4 and all(np.array_equal(a, b) for a, b in zip(part, first[3:7]))
    assert list(src.frames(5, 5)) == []
    with pytest.raises(ValueError):
        src.frames(0, 13)


@pytest.mark.parametrize("name, n", [("ntsc", 10), ("ntsc_mkv", 7)])
def test_rational_fps_is_exact(media, name, n):
    info = probe(getattr(media, name))
    assert info.fps == Fraction(30000, 1001)
    assert info.num_frames == n
    assert info.duration == Fraction(n * 1001, 30000)
    assert not info.variable_frame_rate  # Matroska's millisecond timestamps jitter, still constant


def test_odd_size(media):
    src = open_source(media.odd)
    assert (src.info.width, src.info.height) == (33, 17)
    frames = list(src.frames())
    assert len(frames) == 5 and frames[0].shape == (17, 33, 3)


def test_ten_bit_is_read_at_full_precision(media):
    src = open_source(media.ten)
    assert (src.info.pix_fmt, src.info.bit_depth) == ("yuv420p10le", 10)
    frame = next(src.frames())
    # 8-bit decoding would put every value on the 1/255 grid
    off_grid = np.abs(frame * 255 - np.round(frame * 255)) > 0.05
    assert off_grid.mean() > 0.5
    # 4:4:4 10-bit through a lossless codec: within 2 ten-bit levels of what was encoded
    f444 = next(open_source(media.ten444).frames())
    assert np.abs(f444 * 65535 - media.ten444_frames[0]).max() / 64 < 2.0


def test_gray_is_expanded_to_rgb(media):
    src = open_source(media.gray)
    assert src.info.is_gray and src.info.pix_fmt == "gray"
    frames = list(src.frames())
    for f, ref in zip(frames, media.gray_frames):
        assert np.array_equal(f[..., 0], f[..., 1]) and np.array_equal(f[..., 0], f[..., 2])
        assert np.abs(f[..., 0] * 255 - ref).max() < 1e-3


def test_rotation_is_applied(media):
    src = open_source(media.rotated)
    assert src.info.rotation == 90 and not src.info.mirrored
    assert (src.info.width, src.info.height) == (16, 32)
    assert src.info.stored_size == (32, 16)
    frames = list(src.frames())
    assert frames[0].shape == (32, 16, 3)
    upright = np.rot90(media.rotated_frames[0], 1)  # counter-clockwise, as the matrix says
    assert np.abs(frames[0] * 255 - upright).max() <= 3


def test_variable_frame_rate_is_flagged_and_fully_read(media):
    src = open_source(media.vfr)
    info = src.info
    assert info.variable_frame_rate and info.num_frames == 6
    assert info.fps == 16 and info.duration == Fraction(3, 8)  # the true mean rate: 6 frames in 9/24 s
    assert len(list(src.frames())) == 6


def test_cover_art_is_not_the_video(media):
    info = probe(media.cover_art)
    assert info.codec == "h264" and info.num_frames == 5
    assert [(s.type, s.codec) for s in info.streams] == [("video", "png")]


# ---------------------------------------------------------------------------- image folders


def test_png_folder_natural_order_alpha_and_default_fps(media):
    src = open_source(media.pngs)
    info = src.info
    assert info.kind == "images" and info.num_frames == 11 and info.fps == 24
    assert [f.name for f in info.files][:3] == ["frame1.png", "frame2.png", "frame3.png"]
    assert info.files[-1].name == "frame11.png"
    assert info.has_alpha and (info.width, info.height) == (20, 12)
    frames = list(src.frames())
    alphas = list(src.alpha_frames())
    for f, a, ref in zip(frames, alphas, media.png_frames):
        assert f.shape == (12, 20, 3) and a.shape == (12, 20)
        assert np.abs(f * 255 - ref[..., :3]).max() < 1e-3  # PNG is lossless: exact
        assert np.abs(a * 255 - ref[..., 3]).max() < 1e-3


def test_folder_fps_argument(media):
    assert open_source(media.pngs, fps="30000/1001").info.fps == Fraction(30000, 1001)
    assert probe(media.pngs, fps=25).duration == Fraction(11, 25)
    with pytest.raises(MediaError):
        probe(media.pngs, fps=0)


def test_sixteen_bit_png_is_exact(media):
    src = open_source(media.png16)
    assert src.info.bit_depth == 16
    for f, ref in zip(src.frames(), media.png16_frames):
        assert np.abs(f * 65535 - ref).max() < 0.02


def test_natural_key():
    names = ["f10.png", "f2.png", "F1.png", "f1b.png"]
    assert sorted(names, key=natural_key) == ["F1.png", "f1b.png", "f2.png", "f10.png"]


def test_alpha_frames_refused_without_alpha(media):
    with pytest.raises(MediaError):
        open_source(media.av_mp4).alpha_frames()


def test_array_source():
    frames = [np.full((4, 6, 3), i / 10, np.float32) for i in range(3)]
    src = ArraySource(frames, fps=Fraction(25))
    assert src.info.num_frames == 3 and src.info.duration == Fraction(3, 25)
    assert [float(f[0, 0, 0]) for f in src.frames(1)] == pytest.approx([0.1, 0.2])


# ----------------------------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    with pytest.raises(MediaError) as e:
        open_source(tmp_path / "nope.mp4")
    one_line_error(e, "not found", "nope.mp4")


def test_empty_file(media):
    with pytest.raises(MediaError) as e:
        open_source(media.empty)
    one_line_error(e, "empty", "empty.mp4")


def test_text_file_named_mp4(media):
    with pytest.raises(MediaError) as e:
        open_source(media.text)
    one_line_error(e, "notes.mp4")


def test_no_video_stream(media):
    with pytest.raises(MediaError) as e:
        open_source(media.audio_only)
    one_line_error(e, "no video stream", "audio")


@pytest.mark.parametrize("name", ["truncated_mkv", "truncated_mp4", "truncated_faststart"])
def test_truncated_file(media, name):
    with pytest.raises(MediaError) as e:
        open_source(getattr(media, name))
    msg = one_line_error(e)
    assert "truncated" in msg


def test_corrupt_frame_mid_way_reports_progress(media):
    src = open_source(media.corrupt)
    assert src.info.num_frames == 10  # the container is intact; the damage shows on decode
    seen = []
    with pytest.raises(MediaError) as e:
        for f in src.frames():
            seen.append(f)
    one_line_error(e, "5 of 10 frames", "corrupt")
    assert len(seen) == 5


def test_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(MediaError) as e:
        open_source(tmp_path)
    one_line_error(e, "no images")


def test_mixed_sizes_in_folder(media, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(media.pngs, folder)
    Image.new("RGB", (21, 12)).save(folder / "frame5.png")
    with pytest.raises(MediaError) as e:
        open_source(folder)
    one_line_error(e, "different sizes", "21x12", "20x12")


def test_corrupt_image_in_folder(media, tmp_path):
    folder = tmp_path / "broken"
    shutil.copytree(media.pngs, folder)
    data = (folder / "frame4.png").read_bytes()
    (folder / "frame4.png").write_bytes(data[:60])  # header intact, pixels gone
    src = open_source(folder)
    with pytest.raises(MediaError) as e:
        list(src.frames())
    one_line_error(e, "frame4.png", "3 of 11 frames")
