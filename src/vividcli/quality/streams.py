"""Frame-stream helpers shared by degrade, eval and compare."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

import cv2
import numpy as np

__all__ = ["prefetch", "resize_to"]

T = TypeVar("T")
_END = object()


def prefetch(items: Iterable[T], depth: int = 3) -> Iterator[T]:
    """Yield `items`, produced `depth` ahead in a background thread.

    Decoding (FFmpeg, swscale, numpy casts) releases the GIL, so reading the next frames
    overlaps with processing the current one: on two cores this is most of the speed-up there is.
    Memory stays bounded by `depth` items; an exception in the producer is raised here, and
    closing this generator early stops the producer.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((_END, None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            q.put((_END, exc))

    worker = threading.Thread(target=produce, name="vividvr-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, exc = q.get()
            if exc is not None:
                raise exc
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():
            try:
                q.get(timeout=0.1)
            except queue.Empty:
                pass
        close = getattr(items, "close", None)
        if close is not None:
            close()


def resize_to(frame: np.ndarray, width: int, height: int, *, nearest: bool = False) -> np.ndarray:
    """`frame` at width x height: area averaging to shrink, bicubic to enlarge (nearest if asked)."""
    h, w = frame.shape[:2]
    if (w, h) == (width, height):
        return frame
    if nearest:
        mode = cv2.INTER_NEAREST
    else:
        mode = cv2.INTER_AREA if width * height < w * h else cv2.INTER_CUBIC
    out = cv2.resize(frame, (width, height), interpolation=mode)
    return np.clip(out, 0.0, 1.0) if out.dtype == np.float32 and mode == cv2.INTER_CUBIC else out
