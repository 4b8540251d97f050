"""The video encoders and containers vividvr writes, their defaults, and the check of encoder options."""

from __future__ import annotations

import functools
import io

import av

from vividcli.errors import UsageError

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
