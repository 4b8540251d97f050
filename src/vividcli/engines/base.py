"""The engine protocol: what every restorer (classic, Vivid-VR, ...) offers the CLI and batch runner.

    engine = ClassicEngine(scale=2)
    w, h = engine.output_size(source.info.width, source.info.height)
    with VideoWriter(out, width=w, height=h, source=source.info) as writer:
        for frame in engine.restore(source, progress):
            writer.write(frame)

An engine streams: it pulls frames from `source.frames()` (which decodes afresh on every call,
so an engine may make more than one pass) and yields restored frames as soon as it can,
holding only what its method needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

import numpy as np

from vividcli.interrupt import GracefulInterrupt
from vividcli.media.reader import FrameSource
from vividcli.progress import Progress

__all__ = ["Engine", "EngineFactory", "checked_restore"]


@runtime_checkable
class Engine(Protocol):
    """A video restorer.

    `restore` yields exactly `source.info.num_frames` frames, in order, each float32 RGB
    HxWx3 in [0, 1] with (W, H) == `output_size(source.info.width, source.info.height)`.
    Engines must not drop, duplicate or reorder frames, nor change the size silently.
    """

    name: str

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the frames `restore` yields for an input of this size."""
        ...

    def restore(self, source: FrameSource, progress: Progress | None = None) -> Iterator[np.ndarray]:
        """Yield the restored frames of `source`, streaming."""
        ...


def checked_restore(engine: Engine, source: FrameSource, progress: Progress | None = None) -> Iterator[np.ndarray]:
    """`engine.restore(source, progress)`, enforcing the contract frame by frame.

    Raises RuntimeError (an engine bug, not a user error) on a frame of the wrong size, dtype or
    channel count, or when the engine yields more or fewer than `source.info.num_frames` frames,
    so a writer never commits a short or misshapen video.
    """
    n = source.info.num_frames
    w, h = engine.output_size(source.info.width, source.info.height)
    count = 0
    for frame in engine.restore(source, progress):
        if count == n:
            raise RuntimeError(f"engine {engine.name!r} yielded more than the {n} input frames")
        if frame.shape != (h, w, 3) or frame.dtype != np.float32:
            raise RuntimeError(f"engine {engine.name!r} yielded frame {count} as {frame.dtype} {frame.shape}, "
                               f"expected float32 {(h, w, 3)}")
        count += 1
        yield frame
    if count != n:
        raise RuntimeError(f"engine {engine.name!r} yielded {count} frames for {n} input frames")


EngineFactory = Callable[[FrameSource, GracefulInterrupt], Engine]
"""Makes the engine for one input of a batch (models loaded once, shared by every input)."""
