"""`vividvr compare A B [C ...] -o OUT`: a labelled comparison video, or a still contact sheet.

The output keeps the first input's frame rate, frame count and audio. Every input is brought to
one panel size (the largest input's; area averaging to shrink, bicubic to enlarge), then
optionally cropped and magnified (nearest neighbour, so pixels stay visible) and laid out.
"""

from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vividcli.errors import MediaError, UsageError
from vividcli.media.reader import FrameSource, open_source
from vividcli.media.writer import check_encoding, open_writer
from vividcli.progress import QuietReporter, make_reporter
from vividcli.quality.layout import LAYOUTS, Layout, label_sprite
from vividcli.quality.photometric import to_uint8
from vividcli.quality.report import atomic_write
from vividcli.quality.streams import prefetch, resize_to

__all__ = ["CompareConfig", "run_compare", "compare_video"]

MAX_ZOOM = 16.0
SHEET_FRAMES = 4  # stills in a contact sheet when --frames is not given


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"{what} takes comma-separated whole numbers, got {text!r}") from None


@dataclass(frozen=True)
class CompareConfig:
    inputs: tuple[Path, ...]
    output: Path
    layout: str = "side"
    labels: tuple[str, ...] = ()
    crop: tuple[int, int, int, int] | None = None
    zoom: float = 2.0
    frames: tuple[int, ...] | None = None
    png: bool = False
    align: bool = False
    codec: str | None = None
    crf: int | None = None
    fps: str | None = None
    audio: bool = True
    overwrite: bool = False
    quiet: bool = False
    json: bool = False

    @classmethod
    def from_options(cls, *, inputs, output, layout: str = "side", labels: str | None = None,
                     crop: str | None = None, zoom: float = 2.0, frames: str | None = None, png: bool = False,
                     align: bool = False, codec: str | None = None, crf: int | None = None,
                     fps: str | None = None, audio: bool = True, overwrite: bool = False, quiet: bool = False,
                     json: bool = False) -> CompareConfig:
        """Check the options (UsageError, exit 2); the inputs are checked when opened."""
        inputs = tuple(Path(p) for p in inputs)
        out = Path(output)
        if len(inputs) < 2:
            raise UsageError("compare needs at least two inputs")
        if layout not in LAYOUTS:
            raise UsageError(f"--layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        if layout == "slider" and len(inputs) != 2:
            raise UsageError(f"--layout slider compares exactly two inputs, got {len(inputs)}")
        names = tuple(s.strip() for s in labels.split(",")) if labels is not None else tuple(p.stem for p in inputs)
        if len(names) != len(inputs):
            raise UsageError(f"--labels gives {len(names)} names for {len(inputs)} inputs")
        box = _ints(crop, "--crop") if crop is not None else None
        if box is not None and (len(box) != 4 or min(box[:2]) < 0 or min(box[2:]) < 1):
            raise UsageError(f"--crop takes X,Y,W,H with X,Y >= 0 and W,H >= 1, got {crop!r}")
        if not 0.1 <= zoom <= MAX_ZOOM:
            raise UsageError(f"--zoom must be from 0.1 to {MAX_ZOOM:g}, got {zoom}")
        stills = _ints(frames, "--frames") if frames is not None else None
        if stills is not None and (not png or min(stills) < 0):
            raise UsageError("--frames picks stills (frame numbers from 0) for a --png contact sheet")
        if png and out.suffix.lower() != ".png":
            raise UsageError(f"--png writes one PNG image: name the output *.png, got {out}")
        if not png:
            if not out.suffix:
                raise UsageError(f"name the output video with an extension (.mp4, .mov, .mkv), got {out}")
            check_encoding(codec, crf=crf, extension=out.suffix)
        elif codec is not None or crf is not None:
            raise UsageError("--codec/--crf do not apply to a --png contact sheet")
        if out.exists() and not overwrite:  # refused like the media writer refuses: exit 1
            raise MediaError(f"output exists: {out} (pass --overwrite to replace it, or choose another path)")
        return cls(inputs=inputs, output=out, layout=layout, labels=names, crop=box, zoom=zoom, frames=stills,
                   png=png, align=align, codec=codec, crf=crf, fps=fps, audio=audio, overwrite=overwrite,
                   quiet=quiet, json=json)


class _Panels:
    """Turns the inputs' frames into same-size panels (resize, then crop and zoom)."""

    def __init__(self, config: CompareConfig, sources: list[FrameSource]):
        big = max(sources, key=lambda s: s.width * s.height)
        self.width, self.height = big.width, big.height
        self.crop = config.crop
        if self.crop is not None:
            x, y, w, h = self.crop
            if x + w > self.width or y + h > self.height:
                raise UsageError(f"--crop {x},{y},{w},{h} reaches outside the {self.width}x{self.height} frame "
                                 "(coordinates are in the largest input's pixels)")
            self.out_w, self.out_h = round(w * config.zoom), round(h * config.zoom)
        else:
            self.out_w, self.out_h = self.width, self.height
        self.out_w, self.out_h = max(2, self.out_w + self.out_w % 2), max(2, self.out_h + self.out_h % 2)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        frame = resize_to(frame, self.width, self.height)
        if self.crop is not None:
            x, y, w, h = self.crop
            return resize_to(frame[y:y + h, x:x + w], self.out_w, self.out_h, nearest=True)
        return resize_to(frame, self.out_w, self.out_h)


def _open(config: CompareConfig) -> tuple[list[FrameSource], int, list[str]]:
    sources = [open_source(p, config.fps) for p in config.inputs]
    counts = [s.num_frames for s in sources]
    notes = []
    if len(set(counts)) > 1:
        listed = ", ".join(f"{p.name} {n}" for p, n in zip(config.inputs, counts))
        if not config.align:
            raise MediaError(f"frame counts differ ({listed}); pass --align to compare the first {min(counts)}")
        notes.append(f"frame counts differ ({listed}); compared the first {min(counts)}")
    return sources, min(counts), notes


def _stream(sources: list[FrameSource], frames: int, panels: _Panels):
    streams = [prefetch(s.frames(0, frames)) for s in sources]
    try:
        for _ in range(frames):
            yield [panels(next(stream)) for stream in streams]
    finally:
        for stream in streams:
            stream.close()


def compare_video(config: CompareConfig, reporter: QuietReporter | None = None) -> dict:
    """Write the comparison (video or contact sheet); returns a summary."""
    reporter = reporter or QuietReporter()
    sources, frames, notes = _open(config)
    panels = _Panels(config, sources)
    layout = Layout(config.layout, list(config.labels), panels.out_w, panels.out_h, float(sources[0].info.fps))
    if config.png:
        stills = _contact_sheet(config, sources, frames, panels, layout, reporter)
        return {"output": str(config.output), "frames": list(stills), "width": layout.width, "notes": notes}
    options = {"codec": config.codec, "crf": config.crf, "copy_audio": config.audio}
    reporter.stage("compare", frames)
    with open_writer(config.output, width=layout.width, height=layout.height, source=sources[0].info,
                     overwrite=config.overwrite, **options) as writer:
        for t, row in enumerate(_stream(sources, frames, panels)):
            writer.write(layout.compose(row, t))
            reporter.advance()
    return {"output": str(config.output), "frames": writer.frames_written, "width": layout.width,
            "height": layout.height, "layout": config.layout, "notes": notes + writer.warnings}


def _contact_sheet(config, sources, frames, panels, layout, reporter) -> tuple[int, ...]:
    stills = config.frames or tuple(sorted({round(i * (frames - 1) / max(1, SHEET_FRAMES - 1))
                                            for i in range(SHEET_FRAMES)}))
    if max(stills) >= frames:
        raise UsageError(f"--frames {max(stills)} is past the last frame ({frames - 1})")
    rows: dict[int, np.ndarray] = {}
    reporter.stage("compare", max(stills) + 1)
    for t, row in enumerate(_stream(sources, max(stills) + 1, panels)):
        if t in stills:
            canvas = layout.compose(row, t)
            tag = label_sprite(f"frame {t}", layout.panel_h)
            y, x = canvas.shape[0] - tag[0].shape[0] - layout.margin, layout.margin
            region = canvas[y:y + tag[0].shape[0], x:x + tag[0].shape[1]]
            region[:] = region * (1 - tag[1]) + tag[0] * tag[1]
            rows[t] = to_uint8(canvas)
        reporter.advance()
    gap = np.zeros((4, layout.width, 3), np.uint8)
    sheet = np.concatenate([part for t in stills for part in (rows[t], gap)][:-1])
    buffer = io.BytesIO()
    Image.fromarray(sheet).save(buffer, format="PNG")
    atomic_write(config.output, buffer.getvalue(), config.overwrite)
    return stills


def run_compare(config: CompareConfig) -> int:
    """`vividvr compare`: write the comparison, print --json or a closing line; exit code 0."""
    reporter = make_reporter(config.quiet)
    try:
        summary = compare_video(config, reporter)
    finally:
        reporter.close()
    if config.json:
        print(json.dumps(summary), flush=True)
    if not config.quiet:
        for note in summary["notes"]:
            print(f"note: {note}", file=sys.stderr)
        print(f"{summary['output']}: {config.layout} comparison of {len(config.inputs)} inputs", file=sys.stderr)
    return 0
