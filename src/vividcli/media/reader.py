"""Read frames from a video file or an image-sequence folder as float32 RGB arrays.

    source = open_source("in.mp4")            # or a folder of PNG/JPG/TIFF images
    source.info.num_frames, source.info.fps   # exact (see probe.py)
    for frame in source.frames():             # HxWx3 float32 in [0, 1], upright
        ...

Every `frames()` call opens a fresh decode, so a consumer can make several passes (e.g. one to
compute statistics, one to restore) without holding frames in memory.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import Interpolation

from vividcli.errors import MediaError
from vividcli.media.probe import ColorInfo, VideoInfo, color_info, decode_image, probe

__all__ = ["FrameSource", "VideoFileSource", "ImageSequenceSource", "ArraySource", "open_source",
           "frame_to_array"]

READ_FLAGS = Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
"""swscale flags for YUV -> RGB. Full chroma interpolation with accurate rounding cuts the error of
4:2:0 chroma upsampling about 3x against swscale's default; with BILINEAR instead of BICUBIC the
same flags give wrong colours for rgb48 output in FFmpeg 8.1, so keep BICUBIC (docs/media.md)."""

# ColorInfo.matrix -> PyAV/swscale colourspace names
_SWS_MATRIX = {"bt709": "ITU709", "bt601": "ITU601", "bt2020": "BT2020", "smpte240m": "SMPTE240M",
               "fcc": "FCC"}


def open_source(path: str | os.PathLike[str], fps: Fraction | int | str | None = None) -> FrameSource:
    """Open a video file or an image-sequence folder for reading.

    `fps` is the frame rate of a folder (default 24, like the reference); it is ignored for a
    video, which keeps its own exact rate. Raises MediaError for unreadable input (see `probe`).
    """
    info = probe(path, fps)
    if info.kind == "images":
        return ImageSequenceSource(info)
    return VideoFileSource(info)


def frame_to_array(frame: av.VideoFrame, color: ColorInfo, *, alpha: bool = False) -> np.ndarray:
    """One decoded frame -> float32 HxWx3 RGB (HxWx4 RGBA with `alpha`) in [0, 1], as stored.

    8-bit formats go through rgb24 (exact /255); deeper ones through rgb48 (/65535), so 10-bit
    values are not quantised to 8 bits. YUV uses `color.matrix` and range explicitly rather than
    relying on swscale's defaults (untagged HD would otherwise be read as BT.601), and
    `READ_FLAGS` for chroma upsampling.
    """
    fmt = frame.format
    deep = max(c.bits for c in fmt.components) > 8
    target = ("rgba64le" if deep else "rgba") if alpha else ("rgb48le" if deep else "rgb24")
    kwargs: dict[str, object] = {}
    matrix = _SWS_MATRIX.get(color.matrix)  # None for RGB, gray and palette formats
    if matrix:
        kwargs = {"src_colorspace": matrix, "dst_colorspace": matrix,
                  "src_color_range": "JPEG" if color.full_range else "MPEG", "dst_color_range": "JPEG"}
    arr = frame.to_ndarray(format=target, interpolation=READ_FLAGS, **kwargs)
    return arr.astype(np.float32) / np.float32(65535 if deep else 255)  # division: 255/255 is exactly 1


def _orient(arr: np.ndarray, rotation: int, mirrored: bool) -> np.ndarray:
    """Make a stored frame upright: mirror horizontally if asked, then turn counter-clockwise."""
    if mirrored:
        arr = arr[:, ::-1]
    if rotation:
        arr = np.rot90(arr, k=rotation // 90)
    return np.ascontiguousarray(arr)


class FrameSource(ABC):
    """Frames of one input. `info` describes them; `frames()` yields them, freshly decoded each call."""

    info: VideoInfo

    def __init__(self, info: VideoInfo):
        self.info = info

    def __len__(self) -> int:
        return self.info.num_frames

    # Shortcuts matching the structural FrameSource protocol of vividcli.pipeline.
    @property
    def num_frames(self) -> int:
        return self.info.num_frames

    @property
    def width(self) -> int:
        return self.info.width

    @property
    def height(self) -> int:
        return self.info.height

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """Frames [start, stop) as float32 RGB HxWx3 in [0, 1], upright, in order.

        Each call decodes afresh (nothing is cached). Starting past 0 decodes and discards the
        frames before `start` (exact, but costs their decode time). Raises MediaError if the
        input turns out to be corrupt mid-way, saying how many frames were decoded.
        """
        start, stop = self._range(start, stop)
        return self._iter(start, stop, alpha=False)

    def alpha_frames(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """The alpha planes of frames [start, stop) as float32 HxW in [0, 1] (a separate decode pass)."""
        if not self.info.has_alpha:
            raise MediaError(f"{self.info.path} has no alpha channel ({self.info.pix_fmt})")
        start, stop = self._range(start, stop)
        return self._iter(start, stop, alpha=True)

    def _range(self, start: int, stop: int | None) -> tuple[int, int]:
        n = self.info.num_frames
        stop = n if stop is None else stop
        if not 0 <= start <= stop <= n:
            raise ValueError(f"frame range [{start}, {stop}) is outside 0..{n}")
        return start, stop

    def _iter(self, start: int, stop: int, alpha: bool) -> Iterator[np.ndarray]:
        info = self.info
        for frame in self._decode(start, stop):
            arr = self._convert(frame, alpha)
            arr = _orient(arr, info.rotation, info.mirrored)
            yield arr[..., 3] if alpha else arr

    def _convert(self, frame, alpha: bool) -> np.ndarray:
        return frame_to_array(frame, self.info.color, alpha=alpha)

    @abstractmethod
    def _decode(self, start: int, stop: int) -> Iterator[object]:
        """Yield frames start..stop-1 (decoded objects that `_convert` understands)."""


class VideoFileSource(FrameSource):
    """Frames of a file's main video stream (`info.video_stream_index`), decoded with FFmpeg (PyAV)."""

    def _decode(self, start: int, stop: int) -> Iterator[av.VideoFrame]:
        info = self.info
        if start == stop:
            return
        try:
            container = av.open(str(info.path))
        except av.error.FFmpegError as e:
            raise MediaError(f"cannot open {info.path}: {e} (was it changed or removed since it was probed?)") from None
        with container:
            stream = container.streams[info.video_stream_index]
            stream.thread_type = "AUTO"
            n = 0
            try:
                for frame in container.decode(stream):
                    if n >= stop:
                        if stop < info.num_frames:
                            return
                        raise MediaError(f"{info.path} decodes to more frames than the {info.num_frames} "
                                         "its packets promise; remux it (ffmpeg -i in -c copy out.mkv)")
                    if n >= start:
                        yield frame
                    n += 1
            except av.error.FFmpegError as e:
                raise MediaError(f"{info.path} is corrupt: decoding failed after {n} of {info.num_frames} "
                                 f"frames ({e.strerror or e}); re-download or re-export it") from None
        if n < stop:
            raise MediaError(f"{info.path} is truncated or corrupt: only {n} of {info.num_frames} frames "
                             "could be decoded; re-download or re-export it")


class ImageSequenceSource(FrameSource):
    """Frames of a folder of images (one file per frame, natural sort order)."""

    def _decode(self, start: int, stop: int) -> Iterator[av.VideoFrame]:
        info = self.info
        for i, f in enumerate(info.files[start:stop], start):
            try:
                frame = decode_image(f)
            except MediaError as e:
                raise MediaError(f"{e}; {i} of {info.num_frames} frames were decoded") from None
            if (frame.width, frame.height) != (info.width, info.height):
                raise MediaError(f"image {f} is {frame.width}x{frame.height}, not {info.width}x{info.height} "
                                 "like the rest of the folder (resize it)")
            yield frame

    def _convert(self, frame: av.VideoFrame, alpha: bool) -> np.ndarray:
        # each file carries its own tags (a folder may mix PNG and JPEG)
        return frame_to_array(frame, color_info(frame, frame.width, frame.height), alpha=alpha)


class ArraySource(FrameSource):
    """Frames already in memory (float32 HxWx3 in [0, 1]): for tests, previews and engine chaining."""

    def __init__(self, frames: Sequence[np.ndarray], fps: Fraction | int = 24):
        if not len(frames):
            raise ValueError("ArraySource needs at least one frame")
        h, w = frames[0].shape[:2]
        for i, f in enumerate(frames):
            if f.shape != (h, w, 3):
                raise ValueError(f"frame {i} has shape {f.shape}, expected {(h, w, 3)}")
        fps = Fraction(fps)
        n = len(frames)
        self._frames = frames
        super().__init__(VideoInfo(
            path=Path("<memory>"), kind="memory", width=w, height=h, num_frames=n, fps=fps,
            time_base=1 / fps, duration=Fraction(n) / fps, pix_fmt="rgbf32", bit_depth=32,
            has_alpha=False, is_gray=False, codec="none", container="memory",
            color=ColorInfo(matrix="rgb", full_range=True), frame_count_source="memory"))

    def _decode(self, start: int, stop: int) -> Iterator[np.ndarray]:
        yield from self._frames[start:stop]

    def _convert(self, frame: np.ndarray, alpha: bool) -> np.ndarray:
        return np.asarray(frame, dtype=np.float32)
