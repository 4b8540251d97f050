"""VideoWriter / ImageSequenceWriter: timing, stream copy, tags, colour, rounding, atomic output."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from vividcli.errors import MediaError, UsageError
from vividcli.media.probe import probe
from vividcli.media.reader import open_source
from vividcli.media.writer import ImageSequenceWriter, VideoWriter, open_writer, quantize
from vividcli.testing.media import CREATION_TIME, TITLE, Media


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Media:
    return Media(tmp_path_factory.mktemp("media"))


def copy_through(src_path: Path, out: Path, **options) -> VideoWriter:
    src = open_source(src_path)
    with VideoWriter(out, width=src.info.width, height=src.info.height, source=src.info, **options) as w:
        for frame in src.frames():
            w.write(frame)
    return w


def audio_packets(path: Path) -> tuple[int, Fraction]:
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        packets = [p for p in c.demux(s) if p.size]
        return len(packets), sum(Fraction(p.duration) * p.time_base for p in packets)


def hidden_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name or ".old-" in p.name)


def ramp(width: int, height: int, n: int = 3) -> list[np.ndarray]:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return [np.stack([x / max(width - 1, 1), y / max(height - 1, 1), np.full_like(x, 0.2 + 0.1 * i)], -1)
            for i in range(n)]


# --------------------------------------------------------------------- timing, streams, tags


def test_mp4_round_trip_keeps_count_rate_streams_and_tags(media, tmp_path):
    out = tmp_path / "out.mp4"
    w = copy_through(media.av_mp4, out)
    assert w.warnings == [] and w.frames_written == 12
    src, dst = probe(media.av_mp4), probe(out)
    assert dst.num_frames == src.num_frames == 12
    assert dst.fps == src.fps and dst.duration == src.duration
    assert [(s.type, s.codec, s.language) for s in dst.streams] == [
        ("audio", "aac", "fra"), ("subtitle", "mov_text", "deu")]
    assert audio_packets(out) == audio_packets(media.av_mp4)  # same packets, same total duration
    assert dst.metadata["title"] == TITLE and dst.metadata["creation_time"] == CREATION_TIME
    assert dst.stream_metadata["language"] == "eng"
    assert (dst.color.space, dst.color.primaries, dst.color.trc, dst.color.range) == (
        "smpte170m", "smpte170m", "smpte170m", "tv")  # SD: BT.601, always tagged
    assert hidden_leftovers(tmp_path) == []


def test_mkv_skips_what_it_cannot_hold_with_a_warning(media, tmp_path):
    out = tmp_path / "out.mkv"
    w = copy_through(media.av_mp4, out)
    assert len(w.warnings) == 1 and "mov_text" in w.warnings[0] and "\n" not in w.warnings[0]
    dst = probe(out)
    assert dst.num_frames == 12 and dst.fps == 24
    assert [s.type for s in dst.streams] == ["audio"]
    n_in, d_in = audio_packets(media.av_mp4)
    n_out, d_out = audio_packets(out)
    assert n_out == n_in and abs(d_out - d_in) < Fraction(1, 24)  # Matroska rounds to ms
    assert dst.metadata["title"] == TITLE


def test_streams_can_be_dropped(media, tmp_path):
    out = tmp_path / "video_only.mp4"
    copy_through(media.av_mp4, out, copy_audio=False, copy_subtitles=False, copy_metadata=False)
    dst = probe(out)
    assert dst.streams == () and "title" not in dst.metadata


def test_ntsc_rate_frame_count_and_duration(media, tmp_path):
    for ext in ("mp4", "mkv"):
        out = tmp_path / f"ntsc.{ext}"
        copy_through(media.ntsc, out)
        dst = probe(out)
        assert dst.fps == Fraction(30000, 1001) and dst.num_frames == 10
        assert dst.duration == Fraction(10 * 1001, 30000)


def test_stream_a_container_refuses_late_is_skipped_not_fatal(media, tmp_path):
    w = copy_through(media.pcm, tmp_path / "pcm.mp4")  # .mp4 accepts PCM at first, fails at the end
    assert len(w.warnings) == 1 and "pcm_s16le" in w.warnings[0] and ".mkv" in w.warnings[0]
    assert probe(tmp_path / "pcm.mp4").streams == ()
    w = copy_through(media.pcm, tmp_path / "pcm.mkv")
    assert w.warnings == [] and [s.codec for s in probe(tmp_path / "pcm.mkv").streams] == ["pcm_s16le"]


def test_cover_art_is_skipped_with_a_warning(media, tmp_path):
    w = copy_through(media.cover_art, tmp_path / "art.mp4")
    assert len(w.warnings) == 1 and "video stream #1 (png)" in w.warnings[0]
    assert probe(tmp_path / "art.mp4").num_frames == 5


def test_variable_frame_rate_becomes_constant_with_the_same_duration(media, tmp_path):
    out = tmp_path / "cfr.mp4"
    copy_through(media.vfr, out)
    src, dst = probe(media.vfr), probe(out)
    assert dst.num_frames == 6 and not dst.variable_frame_rate
    assert dst.fps == src.fps == 16 and dst.duration == src.duration


def test_rotation_is_baked_in(media, tmp_path):
    out = tmp_path / "upright.mp4"
    copy_through(media.rotated, out)
    info = probe(out)
    assert (info.width, info.height, info.rotation) == (16, 32, 0)


def test_preview_of_first_frames_trims_copied_audio(media, tmp_path):
    src = open_source(media.av_mp4)
    out = tmp_path / "preview.mp4"
    with VideoWriter(out, width=64, height=48, source=src.info) as w:
        for frame in src.frames(0, 6):
            w.write(frame)
    assert probe(out).num_frames == 6
    _, seconds = audio_packets(out)
    assert abs(seconds - Fraction(6, 24)) <= Fraction(1024, 48000) * 2  # within two AAC packets


# ----------------------------------------------------------------------------- pixels, colour


def test_hd_output_is_tagged_bt709(tmp_path):
    out = tmp_path / "hd.mp4"
    frames = ramp(16, 720)
    with VideoWriter(out, width=16, height=720, fps=24) as w:
        for f in frames:
            w.write(f)
    info = probe(out)
    assert (info.color.space, info.color.primaries, info.color.trc, info.color.range) == (
        "bt709", "bt709", "bt709", "tv")
    back = next(open_source(out).frames())
    assert np.abs(back - frames[0]).mean() < 0.02  # decoded with the same matrix it was encoded with


def test_yuv420_round_trip_is_accurate_and_unbiased(tmp_path):
    # lossless codec, so only RGB<->YUV 4:2:0 conversion (chroma down- and upsampling) is measured;
    # swscale's default flags give ~1.6 levels mean error and darken by ~1 level
    y, x = np.mgrid[0:48, 0:64].astype(np.float32)
    frame = np.stack([(x * 4 % 256) / 255, y * 5 / 255, (64 + (x + y) % 128) / 255], -1)
    out = tmp_path / "yuv420.mkv"
    with VideoWriter(out, width=64, height=48, fps=24, codec="ffv1", pix_fmt="yuv420p") as w:
        w.write(frame)
    back = next(open_source(out).frames())
    err = (back - frame) * 255
    assert np.abs(err).mean() < 0.6
    assert np.abs(err.mean(axis=(0, 1))).max() < 0.2


def test_rounding_not_truncation(tmp_path):
    levels = np.arange(0, 250, 10, dtype=np.float32)
    frame = np.zeros((4, len(levels), 3), np.float32)
    frame[0, :, :] = ((levels + 0.6) / 255)[:, None]  # rounds up
    frame[1, :, :] = ((levels + 0.4) / 255)[:, None]  # rounds down
    q = quantize(frame, 8)
    assert np.array_equal(q[0, :, 0], levels + 1) and np.array_equal(q[1, :, 0], levels)
    out = tmp_path / "lossless.mkv"  # FFV1 RGB: exactly what was written comes back
    with VideoWriter(out, width=frame.shape[1], height=4, fps=24, codec="ffv1") as w:
        w.write(frame)
    back = next(open_source(out).frames())
    assert np.array_equal(np.round(back * 255), q.astype(np.float32))


def test_quantize_sixteen_bit_and_clipping():
    f = np.array([[[-0.1, 0.5, 1.2]]], np.float32)
    assert quantize(f, 16).tolist() == [[[0, 32768, 65535]]]
    with pytest.raises(MediaError):
        quantize(np.full((2, 2, 3), np.nan, np.float32), 8)


def test_ten_bit_output_keeps_precision(tmp_path):
    out = tmp_path / "ten.mp4"
    frames = ramp(64, 48)
    with VideoWriter(out, width=64, height=48, fps=24, codec="hevc", bit_depth=10) as w:
        for f in frames:
            w.write(f)
    assert w.pix_fmt == "yuv420p10le"
    info = probe(out)
    assert (info.codec, info.bit_depth) == ("hevc", 10)
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_tag == "hvc1"
    back = next(open_source(out).frames())
    assert (np.abs(back * 255 - np.round(back * 255)) > 0.05).mean() > 0.5  # not on the 8-bit grid
    assert np.abs(back - frames[0]).mean() < 0.01


def test_odd_size_keeps_exact_size(tmp_path):
    out = tmp_path / "odd.mp4"
    with VideoWriter(out, width=33, height=17, fps=24) as w:
        for f in ramp(33, 17):
            w.write(f)
    assert w.pix_fmt == "yuv444p" and "odd" in w.warnings[0]
    info = probe(out)
    assert (info.width, info.height, info.num_frames) == (33, 17, 3)
    with pytest.raises(UsageError):
        VideoWriter(tmp_path / "odd420.mp4", width=33, height=17, fps=24, pix_fmt="yuv420p")


@pytest.mark.parametrize("codec, ext, pix_fmt", [("prores_ks", "mov", "yuv422p10le"), ("ffv1", "mkv", "bgr0")])
def test_other_codecs(tmp_path, codec, ext, pix_fmt):
    out = tmp_path / f"clip.{ext}"
    with VideoWriter(out, width=32, height=16, fps=Fraction(25), codec=codec) as w:
        for f in ramp(32, 16):
            w.write(f)
    assert w.pix_fmt == pix_fmt
    info = probe(out)
    assert info.num_frames == 3 and info.fps == 25


def test_bad_options_are_usage_errors(tmp_path):
    with pytest.raises(UsageError):
        VideoWriter(tmp_path / "a.avi", width=8, height=8, fps=24)
    with pytest.raises(UsageError):
        VideoWriter(tmp_path / "a.mp4", width=8, height=8, fps=24, codec="prores")  # not in .mp4
    with pytest.raises(UsageError):
        VideoWriter(tmp_path / "a.mkv", width=8, height=8, fps=24, codec="ffv1", crf=10)
    with pytest.raises(UsageError):
        VideoWriter(tmp_path / "a.mp4", width=8, height=8, fps=24, codec="vp9")
    assert list(tmp_path.iterdir()) == []


def test_wrong_frame_size_is_a_programming_error(tmp_path):
    with pytest.raises(ValueError):
        with VideoWriter(tmp_path / "a.mp4", width=8, height=8, fps=24) as w:
            w.write(np.zeros((8, 10, 3), np.float32))
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ atomic output


def test_output_appears_only_when_complete(tmp_path):
    out = tmp_path / "atomic.mp4"
    with VideoWriter(out, width=16, height=16, fps=24) as w:
        w.write(np.zeros((16, 16, 3), np.float32))
        assert not out.exists()
        assert len(hidden_leftovers(tmp_path)) == 1  # the hidden partial file, beside the target
    assert out.exists() and hidden_leftovers(tmp_path) == []


def test_failure_leaves_nothing(tmp_path):
    out = tmp_path / "fail.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(out, width=16, height=16, fps=24, save_frames=tmp_path / "pngs") as w:
            w.write(np.zeros((16, 16, 3), np.float32))
            raise RuntimeError("engine crashed")
    assert list(tmp_path.iterdir()) == []


def test_nan_frame_aborts(tmp_path):
    out = tmp_path / "nan.mp4"
    with pytest.raises(MediaError) as e:
        with VideoWriter(out, width=4, height=4, fps=24) as w:
            w.write(np.zeros((4, 4, 3), np.float32))
            w.write(np.full((4, 4, 3), np.nan, np.float32))
    assert "NaN" in str(e.value) and "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_no_frames_is_an_error(tmp_path):
    with pytest.raises(MediaError):
        with VideoWriter(tmp_path / "empty.mp4", width=4, height=4, fps=24):
            pass
    assert list(tmp_path.iterdir()) == []


def test_never_clobbers_without_overwrite(tmp_path):
    out = tmp_path / "exists.mp4"
    out.write_bytes(b"precious")
    with pytest.raises(MediaError) as e:
        VideoWriter(out, width=4, height=4, fps=24)
    assert "overwrite" in str(e.value) and "\n" not in str(e.value)
    assert out.read_bytes() == b"precious"
    with VideoWriter(out, width=4, height=4, fps=24, overwrite=True) as w:
        w.write(np.zeros((4, 4, 3), np.float32))
        assert out.read_bytes() == b"precious"  # replaced only once complete
    assert probe(out).num_frames == 1


def test_target_created_meanwhile_is_kept(tmp_path):
    out = tmp_path / "race.mp4"
    with pytest.raises(MediaError):
        with VideoWriter(out, width=4, height=4, fps=24) as w:
            w.write(np.zeros((4, 4, 3), np.float32))
            out.write_bytes(b"someone else's")
    assert out.read_bytes() == b"someone else's" and hidden_leftovers(tmp_path) == []


def test_output_equal_to_input_is_refused(media, tmp_path):
    info = probe(media.av_mp4)
    for overwrite in (False, True):
        with pytest.raises(MediaError) as e:
            VideoWriter(media.av_mp4, width=64, height=48, source=info, overwrite=overwrite)
        assert "input" in str(e.value)
    with pytest.raises(MediaError):
        ImageSequenceWriter(media.pngs, width=20, height=12, source=probe(media.pngs), overwrite=True)


def test_missing_output_folder(tmp_path):
    with pytest.raises(MediaError) as e:
        VideoWriter(tmp_path / "no" / "such" / "out.mp4", width=4, height=4, fps=24)
    assert "does not exist" in str(e.value)


# ------------------------------------------------------------------------------ image sequences


def test_png_sequence_writer(tmp_path):
    out = tmp_path / "frames"
    frames = ramp(10, 6, n=3)
    with ImageSequenceWriter(out, width=10, height=6) as w:
        for f in frames:
            w.write(f)
        assert not out.exists()
    assert sorted(p.name for p in out.iterdir()) == ["000000.png", "000001.png", "000002.png"]
    back = list(open_source(out).frames())
    assert all(np.array_equal(np.round(b * 255), quantize(f, 8)) for b, f in zip(back, frames))
    assert hidden_leftovers(tmp_path) == []


def test_png_sequence_sixteen_bit_and_overwrite(tmp_path):
    out = tmp_path / "frames16"
    out.mkdir()
    (out / "old.png").write_bytes(b"x")
    with pytest.raises(MediaError):
        ImageSequenceWriter(out, width=10, height=6, bit_depth=16)
    frames = ramp(10, 6, n=2)
    with ImageSequenceWriter(out, width=10, height=6, bit_depth=16, overwrite=True) as w:
        for f in frames:
            w.write(f)
    assert sorted(p.name for p in out.iterdir()) == ["000000.png", "000001.png"]
    src = open_source(out)
    assert src.info.bit_depth == 16
    assert np.array_equal(np.round(next(src.frames()) * 65535), quantize(frames[0], 16).astype(np.float32))
    assert hidden_leftovers(tmp_path) == []


def test_png_sequence_failure_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with ImageSequenceWriter(tmp_path / "frames", width=4, height=4) as w:
            w.write(np.zeros((4, 4, 3), np.float32))
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_save_frames_beside_video(media, tmp_path):
    w = copy_through(media.ten, tmp_path / "ten.mkv", save_frames=tmp_path / "ten_frames", bit_depth=10)
    assert w.pix_fmt == "yuv420p10le"
    pngs = open_source(tmp_path / "ten_frames")
    assert pngs.info.num_frames == 4 and pngs.info.bit_depth == 16


def test_open_writer_dispatch(tmp_path):
    video = open_writer(tmp_path / "a.mp4", width=4, height=4, fps=24)
    frames = open_writer(tmp_path / "seq", width=4, height=4, fps=24)
    assert isinstance(video, VideoWriter) and isinstance(frames, ImageSequenceWriter)
    video.abort()
    frames.abort()
    with pytest.raises(UsageError):
        open_writer(tmp_path / "seq2", width=4, height=4, codec="libx264")
    assert list(tmp_path.iterdir()) == []
