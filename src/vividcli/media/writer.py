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

import logging
import os
import shutil
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import Interpolation

from vividcli.errors import MediaError, UsageError
from vividcli.files import commit_dir, commit_file
from vividcli.media.codecs import CODECS, VIDEO_EXTENSIONS, check_encoding
from vividcli.media.probe import VideoInfo, is_hd
from vividcli.media.streamcopy import StreamCopier, copyable_tags

__all__ = ["VideoWriter", "ImageSequenceWriter", "open_writer", "quantize", "same_file"]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())  # warnings are also returned in `.warnings`; the CLI decides what to print

WRITE_FLAGS = Interpolation.BICUBIC | Interpolation.ACCURATE_RND
"""swscale flags for RGB -> YUV: accurate rounding removes swscale's default bias (docs/media.md)."""

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


def _commit(commit, tmp: Path, target: Path, overwrite: bool) -> None:
    try:
        commit(tmp, target, overwrite=overwrite)
    except FileExistsError:
        raise MediaError(f"output appeared while writing: {target} (kept it; the new result was "
                         "discarded; pass --overwrite to replace)") from None


class _AtomicOutput:
    """The life cycle both writers share: `write()` frames, then `close()` commits the output (returns
    its path) or `abort()` discards it; as a context manager, an exception aborts."""

    path: Path
    frames_written: int
    _open: bool = False

    def _finish(self) -> None:
        raise NotImplementedError

    def _discard(self) -> None:
        raise NotImplementedError

    def close(self) -> Path:
        if not self._open:
            return self.path
        self._open = False
        try:
            if self.frames_written == 0:
                raise MediaError(f"no frames were written; {self.path} not created")
            self._finish()
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Discard everything written so far (idempotent); the target is left as it was."""
        self._open = False
        self._discard()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class ImageSequenceWriter(_AtomicOutput):
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

    def _finish(self) -> None:
        _commit(commit_dir, self._tmp, self.path, self.overwrite)

    def _discard(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)


def _check_size(frame: np.ndarray, width: int, height: int, index: int) -> None:
    if frame.shape[:2] != (height, width):
        raise ValueError(f"frame {index} is {frame.shape[1]}x{frame.shape[0]}; the writer was opened "
                         f"for {width}x{height}")


def _subsampled(pix_fmt: str, width: int, height: int) -> bool:
    """True if `pix_fmt` subsamples chroma along an axis whose size is odd."""
    fmt = av.VideoFormat(pix_fmt)
    return (width % 2 == 1 and fmt.chroma_width(2) < 2) or (height % 2 == 1 and fmt.chroma_height(2) < 2)


class VideoWriter(_AtomicOutput):
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
            out.metadata.update(copyable_tags(src.metadata))
        stream = out.add_stream(self.codec, rate=self.fps, options=self._options)
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, self.pix_fmt
        stream.codec_context.time_base = 1 / self.fps
        tag = CODECS[self.codec].get("tag")
        if tag and fmt in ("mp4", "mov"):
            stream.codec_tag = tag
        for k, v in self._tags.items():
            setattr(stream.codec_context, k, v)
        if copy_metadata and src is not None:
            stream.metadata.update(copyable_tags(src.stream_metadata))
        self._stream = stream
        if src is not None and src.kind == "video" and src.streams and (copy_audio or copy_subtitles):
            self._copier = StreamCopier(src, out, copy_audio, copy_subtitles, self._warn)
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

    def _finish(self) -> None:
        """Flush the encoder, finish stream copies, and rename the file into place.

        If the whole source was written, the other streams are copied to their end; if fewer
        frames were written (a preview), packets that start after the last frame are dropped.
        """
        try:
            self._container.mux(self._stream.encode(None))
            if self._copier is not None:
                whole = self.source is not None and self.frames_written >= self.source.num_frames
                self._copier.copy_until(None if whole else Fraction(self.frames_written) / self.fps, final=True)
            self._close_container()
        except av.error.FFmpegError as e:
            raise MediaError(f"finishing {self.path} failed: {e}; nothing was written (check free disk space)") from None
        _commit(commit_file, self._tmp, self.path, self.overwrite)
        if self._frames_writer is not None:
            self._frames_writer.close()

    def _discard(self) -> None:
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
