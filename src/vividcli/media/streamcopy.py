"""Copy a source's audio, subtitle and data streams into a new file, packet for packet."""

from __future__ import annotations

import io
import itertools
import logging
from collections.abc import Iterator, Mapping
from fractions import Fraction
from pathlib import Path

import av

from vividcli.media.probe import VideoInfo

log = logging.getLogger(__name__)

# Tags describing the old encode, not the content: not copied to the new file.
_DROP_TAGS = {"major_brand", "minor_version", "compatible_brands", "encoder", "duration",
              "number_of_frames", "number_of_bytes", "bps", "rotate", "vendor_id"}



def copyable_tags(metadata: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in metadata.items()
            if k.lower() not in _DROP_TAGS and not k.startswith("_STATISTICS")}


class StreamCopier:
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
            o.metadata.update(copyable_tags(s.metadata))
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
