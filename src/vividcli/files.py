"""Files that appear whole or not at all: write under a hidden temporary name beside the target,
fsync, then rename into place. The one implementation used by the cache, the media writers and the
captions file (a kill -9 at any instant leaves the old file or the new one, never half of one).
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a folder's entries (renames, creations), to disk; best effort."""
    if os.name == "nt":  # pragma: no cover - folders cannot be opened on Windows
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on folders
    finally:
        os.close(fd)


def temp_path(folder: Path, stem: str) -> Path:
    """A hidden, unique name in `folder`: readers never look at it and a sweep can tell it is garbage."""
    return folder / f".tmp-{stem}-{os.getpid()}-{secrets.token_hex(4)}"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (replacing any old file)."""
    path = Path(path)
    tmp = temp_path(path.parent, path.name)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def commit_file(tmp: Path, target: Path, *, overwrite: bool) -> None:
    """Rename the finished `tmp` onto `target`. Without `overwrite` a file that appeared at `target`
    meanwhile is never replaced: FileExistsError, and `tmp` is left for the caller to discard."""
    fsync_path(tmp)
    if overwrite:
        os.replace(tmp, target)
    else:
        try:
            os.link(tmp, target)  # atomic, and fails if the target exists
        except FileExistsError:
            raise FileExistsError(str(target)) from None
        except OSError:  # no hard links on this filesystem
            if target.exists():
                raise FileExistsError(str(target)) from None
            os.replace(tmp, target)
        else:
            os.unlink(tmp)
    fsync_path(target.parent)


def commit_dir(tmp: Path, target: Path, *, overwrite: bool) -> None:
    """Rename the finished folder `tmp` onto `target` (an old folder is replaced only with `overwrite`)."""
    for f in tmp.iterdir():
        fsync_path(f)
    old = None
    if target.exists():
        if not overwrite:
            raise FileExistsError(str(target))
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.rename(target, old)
    os.rename(tmp, target)
    fsync_path(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
