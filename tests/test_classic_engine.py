"""ClassicEngine: the Engine contract (count, order, size, range), determinism, streaming, end to end."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from vividcli.engines.base import Engine, checked_restore
from vividcli.engines.classic import ClassicEngine
from vividcli.errors import UsageError
from vividcli.media.probe import probe
from vividcli.media.reader import ArraySource, open_source
from vividcli.media.writer import VideoWriter
from vividcli.progress import NullProgress, Progress
from vividcli.testing.media import make_av_mp4


def noisy_static(n: int = 8, h: int = 17, w: int = 33, sigma: float = 0.02) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([x / w, y / h, np.full_like(x, 0.5)], -1) * 0.8 + 0.1
    return [np.clip(base + rng.normal(0, sigma, base.shape), 0, 1).astype(np.float32) for _ in range(n)]


class RecordingProgress:
    def __init__(self):
        self.stages: list[tuple[str, int | None]] = []
        self.done = 0

    def stage(self, name, total):
        self.stages.append((name, total))

    def advance(self, n=1):
        self.done += n


def test_satisfies_the_protocols():
    assert isinstance(ClassicEngine(), Engine)
    assert isinstance(NullProgress(), Progress) and isinstance(RecordingProgress(), Progress)
    assert ClassicEngine().name == "classic"


@pytest.mark.parametrize("scale, size, expected", [(2.0, (33, 17), (66, 34)), (1.5, (33, 17), (50, 26)),
                                                   (1.0, (33, 17), (33, 17)), (0.01, (10, 10), (1, 1))])
def test_output_size(scale, size, expected):
    assert ClassicEngine(scale=scale).output_size(*size) == expected


def test_restore_contract_on_odd_size():
    frames = noisy_static()
    engine = ClassicEngine(scale=2)
    progress = RecordingProgress()
    out = list(engine.restore(ArraySource(frames), progress))
    assert len(out) == len(frames)
    for f in out:
        assert f.shape == (34, 66, 3) and f.dtype == np.float32
        assert 0.0 <= f.min() and f.max() <= 1.0
    assert progress.stages == [("restore", len(frames))] and progress.done == len(frames)


def test_deterministic_and_constant_preserving():
    frames = noisy_static()
    a = list(ClassicEngine().restore(ArraySource(frames)))
    b = list(ClassicEngine().restore(ArraySource(frames)))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    flat = [np.full((9, 7, 3), 0.37, np.float32)] * 3
    for f in ClassicEngine(scale=3).restore(ArraySource(flat)):
        assert np.abs(f - 0.37).max() < 1e-5


def test_temporal_denoise_reduces_static_noise():
    frames = noisy_static(n=10)
    clean = noisy_static(n=1, sigma=0.0)[0]
    plain = list(ClassicEngine(scale=1, denoise=0, sharpen=0).restore(ArraySource(frames)))
    denoised = list(ClassicEngine(scale=1, denoise=0.6, sharpen=0).restore(ArraySource(frames)))
    assert np.array_equal(plain[0], frames[0])  # scale 1, no filters: identity
    err_plain = np.abs(plain[-1] - clean).mean()
    err_denoised = np.abs(denoised[-1] - clean).mean()
    assert err_denoised < 0.8 * err_plain


def test_motion_is_not_smeared():
    a = np.zeros((8, 8, 3), np.float32)
    b = np.ones((8, 8, 3), np.float32)
    out = list(ClassicEngine(scale=1, denoise=0.9, sharpen=0).restore(ArraySource([a, b])))
    assert np.abs(out[1] - b).max() < 1e-6  # a full-frame change is motion, not noise


def test_streams_one_frame_at_a_time():
    pulled = []

    class CountingSource(ArraySource):
        def _decode(self, start, stop):
            for f in super()._decode(start, stop):
                pulled.append(1)
                yield f

    restored = ClassicEngine().restore(CountingSource(noisy_static(n=6)))
    next(restored)
    assert len(pulled) == 1
    next(restored)
    assert len(pulled) == 2


def test_invalid_parameters():
    for kwargs in ({"scale": 0}, {"denoise": 1.0}, {"denoise": -0.1}, {"sharpen": -1}):
        with pytest.raises(UsageError):
            ClassicEngine(**kwargs)


def test_end_to_end_file_to_file(tmp_path):
    src_path = make_av_mp4(tmp_path / "in.mp4", num_frames=6)
    source = open_source(src_path)
    engine = ClassicEngine(scale=2)
    w, h = engine.output_size(source.info.width, source.info.height)
    out = tmp_path / "out.mp4"
    with VideoWriter(out, width=w, height=h, source=source.info) as writer:
        for frame in checked_restore(engine, source):
            writer.write(frame)
    info = probe(out)
    assert (info.width, info.height, info.num_frames) == (128, 96, 6)
    assert info.fps == Fraction(24) and info.duration == source.info.duration
    assert [s.type for s in info.streams] == ["audio", "subtitle"]


class ShortEngine(ClassicEngine):
    """A broken engine: drops the last frame (what Real-ESRGAN's OOM skipping amounted to)."""

    def restore(self, source, progress=None):
        frames = list(super().restore(source, progress))
        yield from frames[:-1]


def test_checked_restore_catches_a_short_engine(tmp_path):
    source = ArraySource(noisy_static(n=4))
    assert len(list(checked_restore(ClassicEngine(), source))) == 4
    out = tmp_path / "short.mp4"
    with pytest.raises(RuntimeError, match="3 frames for 4"):
        with VideoWriter(out, width=66, height=34, fps=24) as writer:
            for frame in checked_restore(ShortEngine(), source):
                writer.write(frame)
    assert list(tmp_path.iterdir()) == []
