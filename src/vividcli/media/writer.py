"""Write restored frames as a video file or a PNG sequence, atomically.

    info = source.info
    with VideoWriter("out.mp4", width=w, height=h, source=info) as out:
        for frame in engine.restore(source):     # float32 RGB HxWx3 in [0, 1]
            out.write(frame)
    # out.mp4 now exists, complete; out.warnings lists anything skipped (e.g. a subtitle track)

Frames are encoded as they arrive into a hidden temporary file beside the target
(`.out.partial-<pid>.mp4`); a successful `close()` fsyncs it and renames it into place, an
exception removes it. An existing output is never replaced unless `overwrite=True`.
Audio, subtitle and data streams of the source are copied packet for packet, interleaved with
the new video. See docs/media.md for the decisions (rounding, odd sizes, colour tags, timing).
"""

from __future__ import annotations

import functools
import io
import itertools
import logging
import os
import shutil
from collections.abc import Iterator, Mapping
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import Interpolation

from vividcli.errors import MediaError, UsageError
from vividcli.media.probe import VideoInfo, is_hd

__all__ = ["VideoWriter", "ImageSequenceWriter", "open_writer", "quantize", "same_file", "VIDEO_EXTENSIONS",
           "CODECS"]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())  # warnings are also returned in `.warnings`; the CLI decides what to print

WRITE_FLAGS = Interpolation.BICUBIC | Interpolation.ACCURATE_RND
"""swscale flags for RGB -> YUV: accurate rounding removes swscale's default bias (docs/media.md)."""

VIDEO_EXTENSIONS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
"""Output extensions a VideoWriter accepts, and the FFmpeg muxer each one uses."""

CODECS: dict[str, dict[str, object]] = {
    # pix: default pixel format for (8-bit, deeper) sources; odd: the same when a size is odd
    "libx264": {"pix": ("yuv420p", "yuv420p10le"), "odd": ("yuv444p", "yuv444p10le"), "crf": 18,
                "preset": "medium"},
    "libx265": {"pix": ("yuv420p", "yuv420p10le"), "odd": ("yuv444p", "yuv444p10le"), "crf": 20,
                "preset": "medium", "tag": "hvc1", "options": {"x265-params": "log-level=error"}},
    "prores_ks": {"pix": ("yuv422p10le", "yuv422p10le"), "odd": ("yuv444p10le", "yuv444p10le"),
                  "options": {"profile": "3", "vendor": "apl0"}},
    "ffv1": {"pix": ("bgr0", "gbrp14le"), "odd": ("bgr0", "gbrp14le"),
             "options": {"level": "3", "slicecrc": "1"}},
}
"""Supported video encoders and their defaults (crf/preset only where the encoder has them)."""

_ALIASES = {"h264": "libx264", "x264": "libx264", "avc": "libx264", "hevc": "libx265",
            "h265": "libx265", "x265": "libx265", "prores": "prores_ks"}
CODEC_CHOICES = "libx264, libx265, prores, ffv1 (or png: a folder of PNG frames)"
X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")
MAX_CRF = 51


@functools.cache
def _muxer_codecs(muxer: str) -> frozenset[str]:
    """Encoders FFmpeg's `muxer` can store (asked of an in-memory container)."""
    with av.open(io.BytesIO(), "w", format=muxer) as container:
        return frozenset(container.supported_codecs)


def check_encoding(codec: str | None, *, crf: int | None = None, preset: str | None = None,
                   pix_fmt: str | None = None, extension: str | None = None) -> str:
    """Check encoder options (and that the container `extension` can hold the codec); the encoder name.

    The CLI calls this before any input is opened, so a typo costs nothing; VideoWriter calls it too.
    """
    name = _ALIASES.get(codec or "libx264", codec or "libx264")
    if name not in CODECS:
        raise UsageError(f"unsupported codec {codec!r}: choose one of {CODEC_CHOICES}")
    if "crf" not in CODECS[name] and (crf is not None or preset is not None):
        raise UsageError(f"--crf/--preset do not apply to {name}; leave them unset")
    if crf is not None and not 0 <= crf <= MAX_CRF:
        raise UsageError(f"--crf must be from 0 (best) to {MAX_CRF}, got {crf}")
    if preset is not None and preset not in X26X_PRESETS:
        raise UsageError(f"--preset must be one of {', '.join(X26X_PRESETS)}, got {preset!r}")
    if pix_fmt is not None:
        supported = {f.name for f in av.Codec(name, "w").video_formats}
        if pix_fmt not in supported:
            raise UsageError(f"{name} cannot encode pix_fmt {pix_fmt}; choose one of {', '.join(sorted(supported))}")
    if extension is not None:
        ext = extension.lower()
        if ext not in VIDEO_EXTENSIONS:
            raise UsageError(f"cannot write {ext or 'files without extension'} videos: use a .mp4, .mov or .mkv "
                             "file, or a folder name without extension for PNG frames")
        if name not in _muxer_codecs(VIDEO_EXTENSIONS[ext]):
            raise UsageError(f"{name} cannot be stored in {ext}; use .mkv or .mov, or another codec")
    return name

# Tags describing the old encode, not the content: not copied to the new file.
_DROP_TAGS = {"major_brand", "minor_version", "compatible_brands", "encoder", "duration",
              "number_of_frames", "number_of_bytes", "bps", "rotate", "vendor_id"}


def quantize(frame: np.ndarray, bits: int, index: int = 0) -> np.ndarray:
    """float RGB in [0, 1] -> uint8 (bits=8) or uint16 (bits=16), rounded to nearest, clipped.

    Rounding (not truncation) keeps the mean level: truncating darkens by half a level.
    Raises MediaError on NaN or infinite values rather than writing garbage.
    """
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame {index} has shape {frame.shape}; expected HxWx3 RGB")
    if not np.isfinite(frame).all():
        raise MediaError(f"frame {index} contains NaN or infinite values (the restoration diverged); "
                         "nothing was written; try again in float32")
    top = 255.0 if bits == 8 else 65535.0
    scaled = np.clip(frame, 0.0, 1.0, dtype=np.float32) * np.float32(top) + np.float32(0.5)
    return np.floor(scaled).astype(np.uint8 if bits == 8 else np.uint16)


def _partial_path(target: Path, suffix: str = "") -> Path:
    return target.with_name(f".{target.stem}.partial-{os.getpid()}{suffix}")


def _check_target(target: Path, source: VideoInfo | None, overwrite: bool, want_dir: bool) -> None:
    if not target.parent.is_dir():
        raise MediaError(f"output folder does not exist: {target.parent} (create it first)")
    if source is not None and same_file(target, source.path):
        raise MediaError(f"output {target} is the input itself; choose another output path")
    if target.exists():
        if not overwrite:
            raise MediaError(f"output exists: {target} (pass --overwrite to replace it, or choose another path)")
        if target.is_dir() != want_dir:
            kind = "a folder" if target.is_dir() else "a file"
            raise MediaError(f"output {target} is {kind}; refusing to replace it with a "
                             f"{'folder' if want_dir else 'file'} (remove it first)")


def same_file(a: Path, b: Path) -> bool:
    """The same file under two names (another spelling or a hard link), or the same path not yet written."""
    if a.exists() and b.exists():
        return os.path.samefile(a, b)  # also catches hard links and different spellings
    return a.resolve() == b.resolve()


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems (or directories on some platforms) refuse fsync
    finally:
        os.close(fd)


def _commit_file(tmp: Path, target: Path, overwrite: bool) -> None:
    """Rename `tmp` onto `target` atomically; without `overwrite`, never replace a file that appeared meanwhile."""
    _fsync(tmp)
    if overwrite:
        os.replace(tmp, target)
    else:
        try:
            os.link(tmp, target)  # atomic, and fails if the target exists
        except FileExistsError:
            raise MediaError(f"output appeared while writing: {target} (kept it; the new result was "
                             "discarded; pass --overwrite to replace)") from None
        except OSError:  # no hard links on this filesystem
            if target.exists():
                raise MediaError(f"output appeared while writing: {target} (pass --overwrite to replace)") from None
            os.replace(tmp, target)
        else:
            os.unlink(tmp)
    _fsync(target.parent)


def _commit_dir(tmp: Path, target: Path, overwrite: bool) -> None:
    for f in tmp.iterdir():
        _fsync(f)
    old = None
    if target.exists():
        if not overwrite:
            raise MediaError(f"output appeared while writing: {target} (pass --overwrite to replace)")
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.rename(target, old)
    os.rename(tmp, target)
    _fsync(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class ImageSequenceWriter:
    """PNG sequence writer (`000000.png`, `000001.png`, ... numbered from 0 like frame indices).

    Writes into a hidden `.<name>.partial-<pid>` folder beside `path` and renames it into place
    on `close()`; an exception (or `abort()`) removes it. `bit_depth` is 8 or 16 (16-bit PNGs
    keep the precision of a 10-bit source).
    """

    def __init__(self, path: str | os.PathLike[str], *, width: int, height: int, bit_depth: int = 8,
                 overwrite: bool = False, source: VideoInfo | None = None):
        if bit_depth not in (8, 16):
            raise UsageError(f"PNG bit depth must be 8 or 16, not {bit_depth}")
        self.path = Path(path)
        _check_target(self.path, source, overwrite, want_dir=True)
        self.width, self.height, self.bit_depth, self.overwrite = width, height, bit_depth, overwrite
        self.frames_written = 0
        self.warnings: list[str] = []
        self._tmp = _partial_path(self.path)
        if self._tmp.exists():
            shutil.rmtree(self._tmp)
        self._tmp.mkdir()
        self._ctx = av.CodecContext.create("png", "w")
        self._ctx.width, self._ctx.height = width, height
        self._ctx.pix_fmt = "rgb24" if bit_depth == 8 else "rgb48be"
        self._ctx.time_base = Fraction(1)
        self._open = True

    def write(self, frame: np.ndarray) -> None:
        """Append one float32 RGB HxWx3 frame in [0, 1]."""
        if not self._open:
            raise RuntimeError("writer is closed")
        _check_size(frame, self.width, self.height, self.frames_written)
        pixels = quantize(frame, self.bit_depth, self.frames_written)
        vf = av.VideoFrame.from_ndarray(pixels, format="rgb24" if self.bit_depth == 8 else "rgb48le")
        if self.bit_depth == 16:
            vf = vf.reformat(format="rgb48be")
        data = b"".join(bytes(p) for p in self._ctx.encode(vf))
        (self._tmp / f"{self.frames_written:06d}.png").write_bytes(data)
        self.frames_written += 1

    def close(self) -> Path:
        """Rename the finished folder into place; returns its path."""
        if not self._open:
            return self.path
        self._open = False
        if self.frames_written == 0:
            self._remove()
            raise MediaError(f"no frames were written; {self.path} not created")
        try:
            _commit_dir(self._tmp, self.path, self.overwrite)
        except BaseException:
            self._remove()
            raise
        return self.path

    def abort(self) -> None:
        """Discard everything written so far (idempotent)."""
        self._open = False
        self._remove()

    def _remove(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> ImageSequenceWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _check_size(frame: np.ndarray, width: int, height: int, index: int) -> None:
    if frame.shape[:2] != (height, width):
        raise ValueError(f"frame {index} is {frame.shape[1]}x{frame.shape[0]}; the writer was opened "
                         f"for {width}x{height}")


def _subsampled(pix_fmt: str, width: int, height: int) -> bool:
    """True if `pix_fmt` subsamples chroma along an axis whose size is odd."""
    fmt = av.VideoFormat(pix_fmt)
    return (width % 2 == 1 and fmt.chroma_width(2) < 2) or (height % 2 == 1 and fmt.chroma_height(2) < 2)


class VideoWriter:
    """Encode frames into a video file as they come; atomic on success, nothing left on failure.

    Arguments (keyword-only after `path`):
      width, height: the output size; every frame must have it (it is never padded or cropped).
      fps: exact frame rate; defaults to `source.fps`. Frame i gets pts i in time base 1/fps,
          so frame count and duration match the source's.
      codec: libx264 (default), libx265, prores_ks, ffv1 (aliases: h264, hevc, x265, prores).
      pix_fmt: default per codec from `bit_depth` (8 -> yuv420p, deeper -> yuv420p10le for
          x264/x265); a 4:2:0/4:2:2 default becomes 4:4:4 when the size is odd (warned).
      crf, preset: x264/x265 quality and speed (defaults 18/20 and "medium").
      bit_depth: the source's bits per component; picks the default pix_fmt.
      source: the input's VideoInfo: its audio/subtitle/data streams and tags are copied,
          and writing onto it is refused.
      copy_audio, copy_subtitles: copy the source's audio / subtitle+data streams (default yes);
          a stream the container cannot hold is skipped with a message in `warnings`.
      copy_metadata: copy container and video-stream tags (title, language, creation_time, ...).
      overwrite: replace an existing output (only once the new one is complete).
      save_frames: also write the frames as PNGs into this folder (16-bit when the video is deeper
          than 8 bits), committed together with the video.
      codec_options: extra encoder options (e.g. {"tune": "film"}).

    Use it as a context manager, or call `close()` (commit) / `abort()` (discard) yourself.
    `warnings` collects one-line notes (streams skipped, pixel format changed); they are logged too.
    """

    def __init__(self, path: str | os.PathLike[str], *, width: int, height: int,
                 fps: Fraction | int | str | None = None, codec: str | None = None,
                 pix_fmt: str | None = None, crf: int | None = None, preset: str | None = None,
                 bit_depth: int = 8, source: VideoInfo | None = None, copy_audio: bool = True,
                 copy_subtitles: bool = True, copy_metadata: bool = True, overwrite: bool = False,
                 save_frames: str | os.PathLike[str] | None = None,
                 codec_options: Mapping[str, str] | None = None):
        self.path = Path(path)
        ext = self.path.suffix.lower()
        self.codec = check_encoding(codec, crf=crf, preset=preset, pix_fmt=pix_fmt, extension=ext)
        if fps is None:
            if source is None:
                raise UsageError("VideoWriter needs fps or source")
            fps = source.fps
        self.fps = Fraction(fps)
        if width <= 0 or height <= 0:
            raise UsageError(f"invalid output size {width}x{height}")
        self.width, self.height, self.overwrite, self.source = width, height, overwrite, source
        self.warnings: list[str] = []
        self.frames_written = 0
        self.pix_fmt = self._resolve_pix_fmt(pix_fmt, bit_depth)
        fmt = av.VideoFormat(self.pix_fmt)
        self.sample_bits = 8 if max(c.bits for c in fmt.components) <= 8 else 16
        self._tags = self._color_tags()
        # RGB -> YUV with the matrix the tags announce (swscale would otherwise default to BT.601)
        self._reformat = {"interpolation": WRITE_FLAGS} if fmt.is_rgb else {
            "interpolation": WRITE_FLAGS, "dst_color_range": "MPEG",
            "dst_colorspace": "ITU709" if self._tags["colorspace"] == 1 else "ITU601"}
        self._options = self._encoder_options(crf, preset, codec_options)
        _check_target(self.path, source, overwrite, want_dir=False)
        self._tmp = _partial_path(self.path, ext)
        self._frames_writer = None
        self._container = None
        self._copier = None
        try:
            self._open_output(ext, copy_audio, copy_subtitles, copy_metadata)
            if save_frames is not None:
                self._frames_writer = ImageSequenceWriter(save_frames, width=width, height=height,
                                                          bit_depth=self.sample_bits, overwrite=overwrite,
                                                          source=source)
        except BaseException:
            self.abort()
            raise
        self._open = True

    # ---------------------------------------------------------------- configuration

    def _resolve_pix_fmt(self, pix_fmt: str | None, bit_depth: int) -> str:
        spec = CODECS[self.codec]
        w, h = self.width, self.height
        if pix_fmt is not None:  # supported by the encoder: check_encoding said so
            if _subsampled(pix_fmt, w, h):
                raise UsageError(f"pix_fmt {pix_fmt} needs an even width and height but the output is "
                                 f"{w}x{h}; use a 4:4:4 format (e.g. yuv444p) or leave pix_fmt unset")
            return pix_fmt
        deep = 1 if bit_depth > 8 else 0
        chosen = spec["pix"][deep]
        if _subsampled(chosen, w, h):
            odd = spec["odd"][deep]
            self._warn(f"output size {w}x{h} is odd: encoding {odd} instead of {chosen} (chroma subsampling "
                       "needs even sizes; some players cannot play 4:4:4)")
            chosen = odd
        return chosen

    def _encoder_options(self, crf, preset, extra) -> dict[str, str]:
        spec = CODECS[self.codec]
        options = dict(spec.get("options", {}))
        if "crf" in spec:  # (crf/preset for other encoders were refused by check_encoding)
            options["crf"] = str(spec["crf"] if crf is None else crf)
            options["preset"] = preset or spec["preset"]
        if self.codec == "prores_ks" and self.pix_fmt.startswith(("yuv444", "yuva444")):
            options["profile"] = "4"  # 4444
        options.update(extra or {})
        return options

    def _color_tags(self) -> dict[str, int]:
        """Explicit colour tags: BT.709 for HD, BT.601 (SMPTE 170M) otherwise; limited range for YUV."""
        hd = is_hd(self.width, self.height)
        prim = trc = 1 if hd else 6  # AVCOL_PRI/TRC_BT709 or SMPTE170M
        if av.VideoFormat(self.pix_fmt).is_rgb:
            return {"color_primaries": prim, "color_trc": trc, "colorspace": 0, "color_range": 2}
        return {"color_primaries": prim, "color_trc": trc, "colorspace": 1 if hd else 6, "color_range": 1}

    def _open_output(self, ext: str, copy_audio: bool, copy_subtitles: bool, copy_metadata: bool) -> None:
        fmt = VIDEO_EXTENSIONS[ext]
        container_options = {"movflags": "+faststart"} if fmt in ("mp4", "mov") else {}
        out = av.open(str(self._tmp), "w", format=fmt, container_options=container_options)
        self._container = out
        src = self.source
        if copy_metadata and src is not None:
            out.metadata.update(_tags(src.metadata))
        stream = out.add_stream(self.codec, rate=self.fps, options=self._options)
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, self.pix_fmt
        stream.codec_context.time_base = 1 / self.fps
        tag = CODECS[self.codec].get("tag")
        if tag and fmt in ("mp4", "mov"):
            stream.codec_tag = tag
        for k, v in self._tags.items():
            setattr(stream.codec_context, k, v)
        if copy_metadata and src is not None:
            stream.metadata.update(_tags(src.stream_metadata))
        self._stream = stream
        if src is not None and src.kind == "video" and src.streams and (copy_audio or copy_subtitles):
            self._copier = _StreamCopier(src, out, copy_audio, copy_subtitles, self._warn)
        try:
            out.start_encoding()  # write the header now: fail before hours of restoration, not after
        except av.error.FFmpegError as e:
            raise MediaError(f"cannot start writing {self.path}: {e} (try --no-audio, or a .mkv output)") from None

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning(message)

    # ---------------------------------------------------------------- writing

    def write(self, frame: np.ndarray) -> None:
        """Encode one float32 RGB HxWx3 frame in [0, 1] (rounded to the output's bit depth)."""
        if not self._open:
            raise RuntimeError("writer is closed")
        i = self.frames_written
        _check_size(frame, self.width, self.height, i)
        pixels = quantize(frame, self.sample_bits, i)
        vf = av.VideoFrame.from_ndarray(pixels, format="rgb24" if self.sample_bits == 8 else "rgb48le")
        vf = vf.reformat(format=self.pix_fmt, **self._reformat)
        for k, v in self._tags.items():
            setattr(vf, k, v)
        vf.pts = i
        vf.time_base = 1 / self.fps
        try:
            self._container.mux(self._stream.encode(vf))
            if self._copier is not None:
                self._copier.copy_until(Fraction(i + 1) / self.fps)
        except av.error.FFmpegError as e:
            raise MediaError(f"writing {self.path} failed at frame {i}: {e}") from None
        if self._frames_writer is not None:
            self._frames_writer.write(frame)
        self.frames_written += 1

    def close(self) -> Path:
        """Flush the encoder, finish stream copies, and rename the file into place; returns its path.

        If the whole source was written, the other streams are copied to their end; if fewer
        frames were written (a preview), packets that start after the last frame are dropped.
        """
        if not self._open:
            return self.path
        self._open = False
        try:
            if self.frames_written == 0:
                raise MediaError(f"no frames were written; {self.path} not created")
            try:
                self._container.mux(self._stream.encode(None))
                if self._copier is not None:
                    whole = self.source is not None and self.frames_written >= self.source.num_frames
                    self._copier.copy_until(None if whole else Fraction(self.frames_written) / self.fps,
                                            final=True)
                self._close_container()
            except av.error.FFmpegError as e:
                raise MediaError(f"finishing {self.path} failed: {e}; nothing was written (check free disk space)") from None
            _commit_file(self._tmp, self.path, self.overwrite)
            if self._frames_writer is not None:
                self._frames_writer.close()
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Discard the partial output (idempotent); the target is left as it was."""
        self._open = False
        try:
            self._close_container()
        except Exception:  # a broken encoder must not keep us from cleaning up
            pass
        self._tmp.unlink(missing_ok=True)
        if self._frames_writer is not None:
            self._frames_writer.abort()

    def _close_container(self) -> None:
        if self._copier is not None:
            copier, self._copier = self._copier, None
            copier.close()
        if self._container is not None:
            container, self._container = self._container, None
            container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _tags(metadata: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in metadata.items()
            if k.lower() not in _DROP_TAGS and not k.startswith("_STATISTICS")}


class _StreamCopier:
    """Copies the source's audio/subtitle/data packets into the output, interleaved with the video.

    Packets are read lazily from a second demuxer on the source and muxed up to the time of the
    latest video frame, so nothing is buffered beyond what the muxer's interleaving needs.
    Timestamps are shifted by the video's start time so sync is kept when the video starts late.
    """

    def __init__(self, info: VideoInfo, out, copy_audio: bool, copy_subtitles: bool, warn):
        self._input = av.open(str(info.path))
        self._map: dict[int, object] = {}
        wanted = {"audio"} if copy_audio else set()
        if copy_subtitles:
            wanted |= {"subtitle", "data"}
        for s in self._input.streams:
            if s.index == info.video_stream_index:
                continue
            name = s.codec_context.name if s.codec_context is not None else (s.name or s.type)
            what = f"{s.type} stream #{s.index} ({name})"
            if s.type in ("video", "attachment"):
                warn(f"skipped {what}: only the main video is restored; other video and attachment "
                     "streams (cover art, fonts) are not copied")
                continue
            if s.type not in wanted:
                continue
            problem = _trial_copy(info.path, s.index, out.format.name)
            if problem:
                ext = Path(out.name).suffix.lower()
                hint = "" if ext == ".mkv" else "; write .mkv to keep it"
                warn(f"skipped {what}: {ext or out.format.name} cannot hold it{hint}")
                log.debug("trial copy of %s failed: %s", what, problem)
                continue
            o = out.add_stream_from_template(s)
            o.metadata.update(_tags(s.metadata))
            o.disposition = s.disposition
            self._map[s.index] = o
        self._offset = info.start_time
        self._packets: Iterator | None = self._input.demux([self._input.streams[i] for i in self._map]) \
            if self._map else None
        self._pending = None

    def copy_until(self, t: Fraction | None, final: bool = False) -> None:
        """Mux packets starting before `t` seconds (all of them for t=None); with `final`, drop the rest."""
        if self._packets is None:
            return
        while True:
            packet = self._pending
            self._pending = None
            if packet is None:
                packet = next(self._packets, None)
                if packet is None:
                    self._packets = None
                    return
            if packet.size == 0:
                continue
            stamp = packet.dts if packet.dts is not None else packet.pts
            when = Fraction(stamp) * packet.time_base - self._offset if stamp is not None else None
            if t is not None and when is not None and when >= t:
                if final:
                    self._packets = None  # the rest lies after the last written frame
                    return
                self._pending = packet
                return
            if self._offset:
                shift = round(self._offset / packet.time_base)
                if packet.pts is not None:
                    packet.pts -= shift
                if packet.dts is not None:
                    packet.dts -= shift
            out_stream = self._map[packet.stream.index]
            packet.stream = out_stream
            out_stream.container.mux(packet)

    def close(self) -> None:
        self._packets = None
        self._pending = None
        self._input.close()


def _trial_copy(path: Path, index: int, fmt: str) -> str | None:
    """Mux the first packets of stream `index` into an in-memory `fmt` file; the error, or None if it works.

    Muxers accept some codecs at stream creation and refuse them only at the header or the
    trailer (PCM in .mp4, FLAC or Opus in .mov), which would lose the finished video; a tiny
    rehearsal finds out first.
    """
    try:
        with av.open(str(path)) as inp, av.open(io.BytesIO(), "w", format=fmt) as out:
            s = inp.streams[index]
            o = out.add_stream_from_template(s)
            out.start_encoding()
            for packet in itertools.islice((p for p in inp.demux(s) if p.size), 3):
                packet.stream = o
                out.mux(packet)
    except (ValueError, av.error.FFmpegError) as e:
        return str(e)
    return None


def open_writer(path: str | os.PathLike[str], *, width: int, height: int, **options):
    """A VideoWriter for .mp4/.mov/.mkv, an ImageSequenceWriter (PNG) for a name without extension.

    For PNG output, `bit_depth` (8 or 16; from the source when it is given and deeper than 8)
    and `overwrite`/`source` are used; video-only options are refused.
    """
    p = Path(path)
    if p.suffix == "" or (p.exists() and p.is_dir()):
        source = options.pop("source", None)
        overwrite = options.pop("overwrite", False)
        bits = options.pop("bit_depth", source.bit_depth if source is not None else 8)
        options.pop("fps", None)
        ignored = {k for k, v in options.items() if v not in (None, True, False)}
        if ignored:
            raise UsageError(f"options {', '.join(sorted(ignored))} do not apply to PNG output")
        return ImageSequenceWriter(p, width=width, height=height, bit_depth=16 if bits > 8 else 8,
                                   overwrite=overwrite, source=source)
    return VideoWriter(p, width=width, height=height, **options)
