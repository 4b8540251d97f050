"""Make small real media files with PyAV for the media tests (tiny sizes, a handful of frames).

Every maker returns the path it wrote; `write_video` also returns the exact frames it encoded so
tests can compare what they read back.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.subtitles.subtitle import SubtitleSet

_ASS_HEADER = (
    b"[Script Info]\nScriptType: v4.00+\nPlayResX: 384\nPlayResY: 288\n\n[V4+ Styles]\n"
    b"Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, "
    b"Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, "
    b"Shadow, Alignment, MarginL, MarginR, MarginV, Encoding\n"
    b"Style: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,0\n\n"
    b"[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
)

TITLE = "Factory clip"
CREATION_TIME = "2024-01-02T03:04:05.000000Z"


def pattern(i: int, width: int, height: int, bits: int = 8) -> np.ndarray:
    """Frame `i`: smooth RGB gradients plus a bright square that moves one step per frame.

    uint8 for bits=8, else uint16 holding `bits`-bit values (0..2**bits-1).
    """
    top = (1 << bits) - 1
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = x / max(width - 1, 1)
    g = y / max(height - 1, 1)
    b = 0.25 + 0.5 * ((x + y + 3 * i) % max(width, 2)) / max(width, 2)
    img = np.stack([0.1 + 0.8 * r, 0.1 + 0.8 * g, b], axis=-1)
    s = max(2, min(width, height) // 4)
    x0 = (2 * i) % max(width - s, 1)
    img[: s, x0 : x0 + s] = 0.95
    out = np.rint(img * top)
    return out.astype(np.uint8 if bits == 8 else np.uint16)


def write_video(
    path: Path,
    *,
    width: int = 64,
    height: int = 48,
    num_frames: int = 8,
    fps: Fraction | int = 24,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    bits: int = 8,
    gray: bool = False,
    audio: bool | str = False,
    audio_layout: str = "mono",
    subtitles: bool = False,
    pts: list[int] | None = None,
    cover_art: bool = False,
    metadata: dict[str, str] | None = None,
    stream_metadata: dict[str, str] | None = None,
    rotation: int | None = None,
    hflip: bool = False,
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
) -> list[np.ndarray]:
    """Encode `num_frames` pattern frames; returns them (uint8 or uint16 RGB, or gray 2-D when `gray`).

    `audio` True adds AAC, a string names another audio encoder; `pts` gives frame timestamps in
    units of 1/fps (uneven ones make a variable-frame-rate file); `cover_art` adds a PNG picture
    stream marked attached_pic before the video.
    """
    fps = Fraction(fps)
    out = av.open(str(path), "w", options=container_options or {})
    out.metadata.update(metadata or {})
    if cover_art:
        art = out.add_stream("png", rate=1)
        art.width, art.height, art.pix_fmt = 8, 8, "rgb24"
        art.disposition = av.stream.Disposition.attached_pic
    v = out.add_stream(codec, rate=fps, options=options or {})
    v.width, v.height, v.pix_fmt = width, height, pix_fmt
    v.metadata.update(stream_metadata or {})
    if rotation is not None or hflip:
        v.set_display_rotation(rotation or 0, hflip=hflip)
    a = s = None
    if audio:
        a = out.add_stream("aac" if audio is True else audio, rate=48000, layout=audio_layout)
        a.metadata["language"] = "fra"
    if subtitles:
        s = out.add_stream("mov_text")
        s.metadata["language"] = "deu"
        s.codec_context.subtitle_header = _ASS_HEADER
    frames = []
    for i in range(num_frames):
        img = pattern(i, width, height, bits)
        if gray:
            img = img[..., 1]
            fmt = "gray" if bits == 8 else "gray16le"
            if bits != 8:
                img = (img.astype(np.uint32) << (16 - bits)).astype(np.uint16)
        else:
            fmt = "rgb24" if bits == 8 else "rgb48le"
            if bits != 8:  # bits-bit values scaled to the full 16-bit range
                img = np.rint(img.astype(np.float64) * 65535 / ((1 << bits) - 1)).astype(np.uint16)
        frames.append(img)
        frame = av.VideoFrame.from_ndarray(img, format=fmt)
        frame.pts = i if pts is None else pts[i]
        out.mux(v.encode(frame))
    out.mux(v.encode(None))
    if cover_art:
        picture = av.VideoFrame.from_ndarray(np.full((8, 8, 3), 200, np.uint8), format="rgb24")
        picture.pts = 0
        out.mux(art.encode(picture))
        out.mux(art.encode(None))
    if a is not None:
        _write_sine(out, a, Fraction(num_frames) / fps, channels=1 if audio_layout == "mono" else 2)
    if s is not None:
        sub = SubtitleSet.create(b"0,0,Default,,0,0,0,,Hello", 0, 500_000, pts=0)
        packet = s.codec_context.encode_subtitle(sub)
        packet.stream = s
        packet.pts = packet.dts = 0
        packet.duration = 500_000
        packet.time_base = Fraction(1, 1_000_000)
        out.mux(packet)
    out.close()
    return frames


def _write_sine(out, stream, seconds: Fraction, channels: int = 1) -> None:
    rate = 48000
    total = int(seconds * rate)
    t = 0
    while t < total:
        n = min(1024, total - t)
        wave = 0.3 * np.sin(np.arange(t, t + n) / rate * 2 * np.pi * 440)
        fmt = stream.codec_context.format.name
        samples = wave.astype(np.float32) if fmt.startswith("flt") else np.round(wave * 32767).astype(np.int16)
        samples = np.repeat(samples[None], channels, axis=0) if fmt.endswith("p") else \
            np.repeat(samples, channels)[None]  # planar: one row per channel; packed: interleaved
        frame = av.AudioFrame.from_ndarray(samples, format=fmt, layout="mono" if channels == 1 else "stereo")
        frame.sample_rate = rate
        frame.pts = t
        out.mux(stream.encode(frame))
        t += n
    out.mux(stream.encode(None))


# ---------------------------------------------------------------------------- named fixtures


def make_av_mp4(path: Path, num_frames: int = 12) -> Path:
    """H.264 mp4 with AAC audio, a mov_text subtitle, title/creation_time/language tags."""
    write_video(path, num_frames=num_frames, audio=True, subtitles=True,
                metadata={"title": TITLE, "creation_time": CREATION_TIME},
                stream_metadata={"language": "eng"})
    return path


def make_odd(path: Path, num_frames: int = 5) -> Path:
    """33x17 (odd both ways) H.264 in 4:4:4, the only way H.264 can hold an odd size exactly."""
    write_video(path, width=33, height=17, num_frames=num_frames, pix_fmt="yuv444p")
    return path


def make_10bit(path: Path, num_frames: int = 4, pix_fmt: str = "yuv420p10le") -> list[np.ndarray]:
    """10-bit FFV1 in Matroska (lossless codec: only the RGB<->YUV conversion rounds)."""
    return write_video(path, codec="ffv1", pix_fmt=pix_fmt, bits=10, num_frames=num_frames)


def make_gray(path: Path, num_frames: int = 4) -> list[np.ndarray]:
    """8-bit gray FFV1 in Matroska (exact)."""
    return write_video(path, codec="ffv1", pix_fmt="gray", gray=True, num_frames=num_frames)


def make_rotated(path: Path, rotation: int = 90, hflip: bool = False, num_frames: int = 3) -> list[np.ndarray]:
    """32x16 H.264 4:4:4 mp4 with a display matrix (counter-clockwise `rotation`, optional mirror)."""
    return write_video(path, width=32, height=16, num_frames=num_frames, pix_fmt="yuv444p",
                       rotation=rotation, hflip=hflip, options={"qp": "0"})


def make_ntsc(path: Path, num_frames: int = 10) -> Path:
    """29.97 fps (exactly 30000/1001)."""
    write_video(path, fps=Fraction(30000, 1001), num_frames=num_frames)
    return path


def make_png_sequence(folder: Path, num_frames: int = 4, *, mode: str = "RGBA", width: int = 20,
                      height: int = 12, start: int = 1, digits: int = 0) -> list[np.ndarray]:
    """PNG files frame{i}.png (no zero padding by default, to exercise natural sort)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    frames = []
    for k in range(num_frames):
        rgb = pattern(k, width, height)
        if mode == "RGBA":
            alpha = np.full((height, width, 1), (40 + 23 * k) % 256, np.uint8)
            arr = np.concatenate([rgb, alpha], axis=-1)
        else:
            arr = rgb
        frames.append(arr)
        name = f"frame{k + start:0{digits}d}.png" if digits else f"frame{k + start}.png"
        Image.fromarray(arr).save(folder / name)
    return frames


def make_png16_sequence(folder: Path, num_frames: int = 3, width: int = 16, height: int = 8) -> list[np.ndarray]:
    """16-bit RGB PNGs (written with FFmpeg's PNG encoder; PIL cannot write 48-bit RGB)."""
    folder.mkdir(parents=True, exist_ok=True)
    frames = []
    for k in range(num_frames):
        img = pattern(k, width, height, bits=16)
        frames.append(img)
        ctx = av.CodecContext.create("png", "w")
        ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = width, height, "rgb48be", Fraction(1)
        frame = av.VideoFrame.from_ndarray(img, format="rgb48le").reformat(format="rgb48be")
        (folder / f"{k:04d}.png").write_bytes(b"".join(bytes(p) for p in ctx.encode(frame)))
    return frames


def truncate(src: Path, dst: Path) -> Path:
    """Copy the first half of `src`'s bytes to `dst`."""
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def make_empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def make_text(path: Path) -> Path:
    path.write_text("this is not a video\n" * 20)
    return path


def corrupt_frame(src: Path, dst: Path, index: int) -> Path:
    """Copy `src` with the payload of video packet `index` overwritten (container structure intact).

    With FFV1's slice CRCs the decoder then fails exactly at that frame.
    """
    with av.open(str(src)) as c:
        packets = [(p.pos, p.size) for p in c.demux(video=0) if p.size]
    data = bytearray(src.read_bytes())
    pos, size = packets[index]
    data[pos + size // 4 : pos + size - 4] = b"\xff" * (size - 4 - size // 4)
    dst.write_bytes(bytes(data))
    return dst


def make_audio_only(path: Path) -> Path:
    """An .m4a with AAC audio and no video stream."""
    out = av.open(str(path), "w", format="mp4")
    a = out.add_stream("aac", rate=48000, layout="mono")
    _write_sine(out, a, Fraction(1, 4))
    out.close()
    return path


class Media:
    """All fixture files, made once in `root` (about 0.3 s)."""

    def __init__(self, root: Path):
        self.root = root
        self.av_mp4 = make_av_mp4(root / "av.mp4")
        self.odd = make_odd(root / "odd.mp4")
        self.ten = root / "ten.mkv"
        self.ten_frames = make_10bit(self.ten)
        self.ten444 = root / "ten444.mkv"
        self.ten444_frames = make_10bit(self.ten444, pix_fmt="yuv444p10le")
        self.gray = root / "gray.mkv"
        self.gray_frames = make_gray(self.gray)
        self.rotated = root / "rotated.mp4"
        self.rotated_frames = make_rotated(self.rotated, 90)
        self.ntsc = make_ntsc(root / "ntsc.mp4")
        self.ntsc_mkv = root / "ntsc.mkv"
        write_video(self.ntsc_mkv, codec="ffv1", pix_fmt="yuv420p", fps=Fraction(30000, 1001), num_frames=7)
        self.pngs = root / "pngs"
        self.png_frames = make_png_sequence(self.pngs, num_frames=11)
        self.png16 = root / "png16"
        self.png16_frames = make_png16_sequence(self.png16)
        self.empty = make_empty(root / "empty.mp4")
        self.text = make_text(root / "notes.mp4")
        self.audio_only = make_audio_only(root / "audio.m4a")
        long_mkv = root / "long.mkv"
        write_video(long_mkv, num_frames=24)
        self.truncated_mkv = truncate(long_mkv, root / "cut.mkv")
        long_mp4 = root / "long.mp4"
        write_video(long_mp4, num_frames=24)
        self.truncated_mp4 = truncate(long_mp4, root / "cut.mp4")
        fast_mp4 = root / "fast.mp4"
        write_video(fast_mp4, num_frames=24, container_options={"movflags": "+faststart"})
        self.truncated_faststart = truncate(fast_mp4, root / "cut_fast.mp4")
        self.vfr = root / "vfr.mp4"
        write_video(self.vfr, num_frames=6, pts=[0, 1, 2, 4, 5, 8])  # 24 fps base, gaps: 16 fps mean
        self.pcm = root / "pcm.mkv"
        write_video(self.pcm, num_frames=6, audio="pcm_s16le", audio_layout="stereo")
        self.cover_art = root / "cover_art.mp4"
        write_video(self.cover_art, num_frames=5, cover_art=True)
        ffv1 = root / "ffv1.mkv"
        write_video(ffv1, codec="ffv1", num_frames=10, options={"slicecrc": "1", "level": "3"})
        self.corrupt = corrupt_frame(ffv1, root / "corrupt.mkv", 5)
