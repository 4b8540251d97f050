"""Probe a video file or an image-sequence folder: exact frame count, exact frame rate, geometry, colour.

`probe(path)` returns a frozen `VideoInfo`. It never trusts a container's frame count on its own:
for a video file it demuxes every packet of the video stream (no decoding, so it is I/O-bound and
cheap next to a restoration) and decodes only the first frame (for the display matrix and the
frame-level colour tags). See docs/media.md for the reasoning behind each decision.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np

from vividcli.errors import MediaError, VividError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff"})
"""Files an image-sequence folder may hold (case-insensitive); anything else in the folder is ignored."""

DEFAULT_IMAGE_FPS = Fraction(24)
"""Frame rate given to an image-sequence folder when the caller does not pass one."""

# FFmpeg's AVColor* enums -> the names ffprobe prints. Values not listed print as their number.
_PRIMARIES = {1: "bt709", 2: "unknown", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m",
              8: "film", 9: "bt2020", 10: "smpte428", 11: "smpte431", 12: "smpte432", 22: "ebu3213"}
_TRC = {1: "bt709", 2: "unknown", 4: "gamma22", 5: "gamma28", 6: "smpte170m", 7: "smpte240m",
        8: "linear", 13: "iec61966-2-1", 14: "bt2020-10", 15: "bt2020-12", 16: "smpte2084",
        17: "smpte428", 18: "arib-std-b67"}
_SPACE = {0: "gbr", 1: "bt709", 2: "unknown", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m",
          8: "ycgco", 9: "bt2020nc", 10: "bt2020c"}
_RANGE = {0: "unknown", 1: "tv", 2: "pc"}


def _name(table: dict[int, str], value: int | None) -> str:
    if value is None:
        return "unknown"
    return table.get(int(value), str(int(value)))


@dataclass(frozen=True)
class ColorInfo:
    """Colour description of the source, as ffprobe names it ("bt709", "smpte170m", "tv", "unknown", ...).

    `matrix` is what the reader actually uses to turn YUV into RGB: the tagged `space` when it is
    known, else a guess by size like players make (BT.709 when width >= 1280 or height > 576,
    else BT.601). `full_range` is likewise the range actually used (tagged "pc" or a yuvj format).
    """

    space: str = "unknown"
    primaries: str = "unknown"
    trc: str = "unknown"
    range: str = "unknown"
    matrix: Literal["bt709", "bt601", "bt2020", "smpte240m", "fcc", "rgb"] = "bt709"
    full_range: bool = False

    @property
    def is_hdr(self) -> bool:
        """True for PQ (SMPTE 2084) or HLG transfer: decoded as code values, not tone-mapped."""
        return self.trc in ("smpte2084", "arib-std-b67")


@dataclass(frozen=True)
class StreamInfo:
    """A non-video stream of the input (audio, subtitle, data, attachment); the writer can copy it."""

    index: int
    type: str
    codec: str
    language: str | None = None
    metadata: dict[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class VideoInfo:
    """What a `FrameSource` yields, and what a writer needs to reproduce the input's timing.

    width, height: the displayed size, i.e. after `rotation` (a 1920x1080 phone clip with a
        90-degree display matrix is 1080x1920 here, and the frames come out upright).
    num_frames: exactly the number of frames `frames()` yields (see `frame_count_source`).
    fps: exact rational frame rate (e.g. Fraction(30000, 1001)); for folders, the rate given.
    time_base: the video stream's time base (1/fps for folders).
    duration: num_frames / fps, in seconds, exact.
    pix_fmt, bit_depth: the coded pixel format and its bits per component (8, 10, 12, 16).
    rotation: counter-clockwise degrees (0, 90, 180, 270) the stored picture is turned to be
        upright, after a horizontal mirror when `mirrored`; same sign as PyAV's VideoFrame.rotation.
    frame_count_source: "packets" (demuxed packets, checked against the header's count or
        duration when it has one) or "files" (one frame per image file).
    variable_frame_rate: the packet timestamps are not evenly spaced; frames are still all read,
        but a writer gives them a constant rate `fps` (the stream's average).
    streams: the other streams (audio, subtitles, data) in file order.
    metadata / stream_metadata: container tags (title, creation_time, ...) and video stream tags.
    files: for an image-sequence folder, the image paths in frame order (natural sort).
    """

    path: Path
    kind: Literal["video", "images", "memory"]
    width: int
    height: int
    num_frames: int
    fps: Fraction
    time_base: Fraction
    duration: Fraction
    pix_fmt: str
    bit_depth: int
    has_alpha: bool
    is_gray: bool
    codec: str
    container: str
    color: ColorInfo = ColorInfo()
    rotation: int = 0
    mirrored: bool = False
    frame_count_source: Literal["packets", "files", "memory"] = "packets"
    variable_frame_rate: bool = False
    video_stream_index: int = 0
    start_time: Fraction = Fraction(0)
    streams: tuple[StreamInfo, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict, hash=False)
    stream_metadata: dict[str, str] = field(default_factory=dict, hash=False)
    files: tuple[Path, ...] = ()

    @property
    def stored_size(self) -> tuple[int, int]:
        """(width, height) as coded, before rotation."""
        return (self.height, self.width) if self.rotation in (90, 270) else (self.width, self.height)


def probe(path: str | os.PathLike[str], fps: Fraction | int | str | None = None) -> VideoInfo:
    """Describe a video file or an image-sequence folder.

    `fps` applies to folders only (default `DEFAULT_IMAGE_FPS`); a video keeps its own rate.
    Raises MediaError (one line: what is wrong, what to do) for a missing/empty/unreadable file,
    a file with no video stream, a truncated file, an empty folder or a folder of mixed sizes.
    """
    p = Path(path)
    if not p.exists():
        raise MediaError(f"input not found: {p} (check the path)")
    if p.is_dir():
        return _probe_folder(p, parse_fps(fps) if fps is not None else DEFAULT_IMAGE_FPS)
    return _probe_video(p)


# --------------------------------------------------------------------------------------- helpers


def parse_fps(fps: Fraction | int | str, error: type[VividError] = MediaError) -> Fraction:
    """A frame rate from a number, a decimal string or a ratio ("30000/1001"); `error` when invalid
    (the command line passes UsageError: a bad --fps is a usage error, exit 2)."""
    try:
        value = Fraction(fps)  # accepts "30000/1001", "29.97", 24, Fraction
    except (ValueError, ZeroDivisionError, TypeError):
        raise error(f"invalid frame rate {fps!r}: use a number like 24 or a ratio like 30000/1001") from None
    if value <= 0:
        raise error(f"invalid frame rate {fps!r}: it must be positive")
    return value


def natural_key(name: str) -> list[object]:
    """Sort key so that frame2.png < frame10.png (digits compare as numbers, text case-insensitively)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def format_depth(fmt: av.VideoFormat) -> tuple[int, bool, bool]:
    """(bits per component, has alpha, is gray) of a pixel format."""
    comps = fmt.components
    bits = max(c.bits for c in comps)
    has_alpha = any(c.is_alpha for c in comps)
    is_gray = fmt.name.startswith(("gray", "ya", "monow", "monob"))
    return bits, has_alpha, is_gray


def is_hd(width: int, height: int) -> bool:
    """HD by the rule players apply to untagged video (mpv: width >= 1280 or height > 576).

    The reader guesses BT.709 vs BT.601 for untagged input with it, and the writer picks the tags
    it writes with it, so an output whose tags get stripped is still decoded right.
    """
    return width >= 1280 or height > 576


def color_info(frame: av.VideoFrame, width: int, height: int) -> ColorInfo:
    """ColorInfo from a decoded frame's tags, with the matrix and range the reader will use."""
    fmt = frame.format
    space = _name(_SPACE, frame.colorspace)
    rng = _name(_RANGE, frame.color_range)
    if fmt.is_rgb or format_depth(fmt)[2] or fmt.has_palette:
        matrix = "rgb"
    elif space == "bt709":
        matrix = "bt709"
    elif space in ("bt470bg", "smpte170m"):
        matrix = "bt601"
    elif space in ("bt2020nc", "bt2020c"):
        matrix = "bt2020"
    elif space in ("smpte240m", "fcc"):
        matrix = space
    else:  # untagged (or exotic): guess like mpv and browsers do
        matrix = "bt709" if is_hd(width, height) else "bt601"
    full = rng == "pc" or fmt.name.startswith("yuvj")
    return ColorInfo(space=space, primaries=_name(_PRIMARIES, frame.color_primaries),
                     trc=_name(_TRC, frame.color_trc), range=rng, matrix=matrix, full_range=full)


def orientation(frame: av.VideoFrame, stream_metadata: dict[str, str]) -> tuple[int, bool]:
    """(counter-clockwise rotation, mirrored) that makes a frame upright, as `ffmpeg` autorotates.

    Follows fftools/ffmpeg_filter.c: the display matrix (frame side data) wins; the legacy
    `rotate` tag (clockwise degrees) is used when there is no matrix. Angles that are not
    multiples of 90 degrees are refused.
    """
    matrix = None
    try:
        sd = frame.side_data[av.sidedata.sidedata.Type.DISPLAYMATRIX]
        matrix = np.frombuffer(bytes(sd), dtype="<i4")[:9]
    except (KeyError, IndexError, ValueError):
        matrix = None
    if matrix is None or not matrix.any():
        tag = stream_metadata.get("rotate")
        if not tag:
            return 0, False
        try:
            cw = float(tag)
        except ValueError:
            return 0, False
        return _snap(-cw, tag), False
    m = matrix.astype(np.float64) / 65536.0
    # av_display_rotation_get: counter-clockwise degrees
    s0, s1 = math.hypot(m[0], m[3]), math.hypot(m[1], m[4])
    if s0 == 0 or s1 == 0:
        return 0, False
    ccw = -math.degrees(math.atan2(m[1] / s1, m[0] / s0))
    theta = -round(ccw)  # ffmpeg's get_rotation(): clockwise, in [0, 360)
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1.0:
        return (90, True) if matrix[3] > 0 else (270, False)  # transpose=cclock_flip / clock
    if abs(theta - 180) < 1.0:
        h, v = matrix[0] < 0, matrix[4] < 0
        return {(True, True): (180, False), (True, False): (0, True),
                (False, True): (180, True), (False, False): (0, False)}[(bool(h), bool(v))]
    if abs(theta - 270) < 1.0:
        return (270, True) if matrix[3] < 0 else (90, False)  # transpose=clock_flip / cclock
    if abs(theta) < 1.0 or abs(theta - 360) < 1.0:
        return (180, True) if matrix[4] < 0 else (0, False)  # vflip = rot180 of a mirror
    return _snap(ccw, f"{ccw:.1f}")


def _snap(ccw: float, shown: str) -> int:
    r = round(ccw / 90) * 90
    if abs(ccw - r) > 1.0:
        raise MediaError(
            f"the video asks to be rotated by {shown} degrees; only multiples of 90 are supported "
            "(remux it without rotation, e.g. ffmpeg -display_rotation 0 -i in.mp4 -c copy out.mp4)"
        )
    return int(r) % 360


def _exact_fps(stream: av.video.stream.VideoStream) -> Fraction | None:
    """The stream's rate as an exact fraction.

    Prefers the average rate; when FFmpeg's guessed base rate agrees with it to 0.1% and is a
    simpler fraction (30000/1001 rather than an average over millisecond timestamps), the
    guessed rate is the exact one.
    """
    avg, guess = stream.average_rate, stream.guessed_rate
    avg = Fraction(avg) if avg else None
    guess = Fraction(guess) if guess else None
    if avg and guess and abs(avg - guess) <= guess / 1000 and guess.denominator <= avg.denominator:
        return guess
    return avg or guess


def _open_error(p: Path, err: Exception) -> MediaError:
    if isinstance(err, av.error.InvalidDataError):
        return MediaError(f"cannot read {p}: not a video FFmpeg understands, or truncated/corrupt "
                          "(check the file plays; re-download or re-export it)")
    return MediaError(f"cannot open {p}: {err} (check the file is a readable video)")


def _probe_video(p: Path) -> VideoInfo:
    if p.stat().st_size == 0:
        raise MediaError(f"input is empty (0 bytes): {p} (re-export or re-copy the file)")
    try:
        container = av.open(str(p))
    except av.error.FFmpegError as e:
        raise _open_error(p, e) from None
    with container:
        # the first real video stream: cover art is a one-picture "video" stream marked attached_pic
        videos = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
        if not videos:
            kinds = ", ".join(sorted({s.type for s in container.streams})) or "no streams"
            raise MediaError(f"no video stream in {p} (it has {kinds}); give a video file or an image folder")
        vs = videos[0]
        meta = dict(container.metadata)
        smeta = dict(vs.metadata)
        fps = _exact_fps(vs)
        if not fps:
            raise MediaError(f"cannot tell the frame rate of {p}; remux it with an explicit rate "
                             "(ffmpeg -r 24 -i in -c copy out.mkv)")
        tb = Fraction(vs.time_base) if vs.time_base else 1 / fps
        fmt_name, codec, index = container.format.name, vs.codec_context.name, vs.index
        streams = tuple(_stream_info(s) for s in container.streams if s.index != vs.index)
        scan = _scan(container, vs)
        _check_complete(p, vs, smeta, fps, tb, scan)
    first, count = scan.first, scan.count
    if first is None:
        raise MediaError(f"no decodable frame in {p} ({count} packets); the file is corrupt or truncated")
    vfr = _is_vfr(scan.pts, fps, tb)
    if vfr and scan.span:
        # FFmpeg's average looks at the first frames only; the writer gives every frame 1/fps,
        # so use the true mean rate: the output then lasts as long as the input.
        fps = (Fraction(count) / (scan.span * tb)).limit_denominator(1001 * 1000)

    bits, has_alpha, is_gray = format_depth(first.format)
    rotation, mirrored = orientation(first, smeta)
    w, h = first.width, first.height
    if rotation in (90, 270):
        w, h = h, w
    start = Fraction(min(scan.pts)) * tb if scan.pts else Fraction(0)
    return VideoInfo(
        path=p, kind="video", width=w, height=h, num_frames=count, fps=fps, time_base=tb,
        duration=Fraction(count) / fps, pix_fmt=first.format.name, bit_depth=bits,
        has_alpha=has_alpha, is_gray=is_gray, codec=codec,
        container=fmt_name, color=color_info(first, first.width, first.height),
        rotation=rotation, mirrored=mirrored, frame_count_source="packets",
        variable_frame_rate=vfr, video_stream_index=index, start_time=start,
        streams=streams, metadata=meta, stream_metadata=smeta,
    )


@dataclass
class _Scan:
    count: int = 0  # packets the decoder will turn into frames
    total: int = 0  # all packets, including those an edit list discards
    pts: list[int] = field(default_factory=list)
    span: int = 0  # ticks from the first frame's start to the last frame's end
    first: av.VideoFrame | None = None
    read_error: bool = False


def _scan(container, vs) -> _Scan:
    """Demux every video packet (no decoding), decoding only until the first frame comes out."""
    scan = _Scan()
    end = None
    try:
        for packet in container.demux(vs):
            if packet.size == 0:  # the flush packet demux() yields at the end
                continue
            scan.total += 1
            if packet.is_discard:  # dropped by an edit list: the decoder will not output it
                continue
            scan.count += 1
            if packet.pts is not None:
                scan.pts.append(packet.pts)
                stop = packet.pts + (packet.duration or 0)
                end = stop if end is None else max(end, stop)
            if scan.first is None:
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    frames = []
                if frames:
                    scan.first = frames[0]
    except av.error.FFmpegError:
        scan.read_error = True
    if scan.first is None and scan.count:
        try:
            frames = vs.decode(None)  # flush: a decoder with delay may hold the only frame
            scan.first = frames[0] if frames else None
        except av.error.FFmpegError:
            scan.first = None
    if scan.pts and end is not None:
        scan.span = end - min(scan.pts)
    return scan


def _check_complete(p: Path, vs, smeta: dict[str, str], fps: Fraction, tb: Fraction, scan: _Scan) -> None:
    """Refuse a file whose packets stop before what its header promises (a cut download)."""
    hint = "re-download or re-export it"
    if scan.read_error:
        raise MediaError(f"{p} is truncated or corrupt: reading stopped after {scan.count} frames ({hint})")
    if vs.frames and scan.total < vs.frames:
        raise MediaError(f"{p} is truncated: its header lists {vs.frames} frames but only {scan.total} "
                         f"are present ({hint})")
    # No frame count in the header (Matroska, WebM, ...): compare with the stream's own duration.
    seconds = None
    if vs.duration:
        seconds = Fraction(vs.duration) * tb
    elif "DURATION" in smeta:
        seconds = _parse_hms(smeta["DURATION"])
    if not vs.frames and seconds is not None and scan.span:
        covered = scan.span * tb
        if covered + Fraction(3, 2) / fps < seconds:
            raise MediaError(f"{p} is truncated: its header says {float(seconds):.3f} s but its frames "
                             f"cover only {float(covered):.3f} s ({scan.count} frames) ({hint})")


def _parse_hms(text: str) -> Fraction | None:
    m = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d+)?)", text.strip())
    if not m:
        return None
    return Fraction(int(m[1]) * 3600 + int(m[2]) * 60) + Fraction(m[3])


def _is_vfr(pts: list[int], fps: Fraction, tb: Fraction) -> bool:
    if len(pts) < 3:
        return False
    steps = np.diff(np.sort(np.asarray(pts, dtype=np.int64)))
    expected = float(1 / (fps * tb))  # ticks per frame
    tolerance = max(1.5, 0.1 * expected)  # timestamps rounded to the time base jitter by a tick
    return bool(np.any(np.abs(steps - expected) > tolerance))


def _stream_info(s) -> StreamInfo:
    ctx = s.codec_context
    codec = ctx.name if ctx is not None else (s.name or "none")
    return StreamInfo(index=s.index, type=s.type, codec=codec, language=s.language or None,
                      metadata=dict(s.metadata))


def list_images(folder: Path) -> list[Path]:
    """The image files of a folder in natural order (hidden files and other extensions ignored)."""
    files = [f for f in folder.iterdir()
             if f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith(".") and f.is_file()]
    return sorted(files, key=lambda f: natural_key(f.name))


def decode_image(path: Path) -> av.VideoFrame:
    """Decode one image file with FFmpeg (keeps 16-bit PNG/TIFF precision, unlike PIL)."""
    try:
        if path.stat().st_size == 0:
            raise MediaError(f"image is empty (0 bytes): {path} (remove or re-export it)")
        with av.open(str(path)) as c:
            for frame in c.decode(video=0):
                return frame
    except av.error.FFmpegError:
        pass
    raise MediaError(f"cannot decode image {path} (corrupt or not an image; remove or re-export it)")


def _probe_folder(folder: Path, fps: Fraction) -> VideoInfo:
    from PIL import Image  # header-only reads: fast size check of every file

    files = list_images(folder)
    if not files:
        raise MediaError(f"no images in folder {folder} (expected .png, .jpg or .tif files)")
    first = decode_image(files[0])
    size = (first.width, first.height)
    for f in files:
        try:
            with Image.open(f) as im:
                fsize = im.size
        except Exception:  # PIL raises many kinds; all mean "not a readable image"
            raise MediaError(f"cannot read image {f} (corrupt or not an image; remove or re-export it)") from None
        if fsize != size:
            raise MediaError(f"images in {folder} have different sizes: {files[0].name} is "
                             f"{size[0]}x{size[1]} but {f.name} is {fsize[0]}x{fsize[1]} (resize them to one size)")
    bits, has_alpha, is_gray = format_depth(first.format)
    n = len(files)
    return VideoInfo(
        path=folder, kind="images", width=size[0], height=size[1], num_frames=n, fps=fps,
        time_base=1 / fps, duration=Fraction(n) / fps, pix_fmt=first.format.name, bit_depth=bits,
        has_alpha=has_alpha, is_gray=is_gray, codec=files[0].suffix.lower().lstrip("."),
        container="images", color=color_info(first, size[0], size[1]), frame_count_source="files",
        files=tuple(files),
    )
