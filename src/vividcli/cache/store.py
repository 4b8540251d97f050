"""Crash-safe cache for resumable restoration jobs (design and guarantees: docs/cache.md).

Locking lives in `lock.py` and whole-cache housekeeping (ls, du, clean) in
`housekeeping.py`; their public names are re-exported here.

Layout::

    <root>/jobs/<key>/job.json                      human-readable description, for `cache ls`
    <root>/jobs/<key>/lock                          flock target; holds the owner's pid, host, start
    <root>/jobs/<key>/entries/<name>.json           manifest record of an entry: its commit point
    <root>/jobs/<key>/entries/<name>.<sha16>.<ext>  immutable data file, named by its content hash
    <root>/trash/                                   jobs that `clean` is deleting

Typical use by the sampler (hold the lock for the whole run)::

    key = job_key(input_id=input_identity(src), checkpoint_id=checkpoint_identity(ckpt),
                  options=numeric_options, format_version=1)
    cache = JobCache.open(cache_root(cli_dir), key)
    with cache.lock():
        cache.sweep()
        cache.write_info(JobInfo(input=str(src), output=str(dst), options=numeric_options))
        resumed = load_state(cache)          # None -> start from step 0
        ...  save_state(cache, tensors, step, rng) at safe points
        cache.update_info(status="done")
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

import platformdirs

from vividcli.cache._io import _now_iso, canonical_json
from vividcli.cache.lock import JobLock
from vividcli.errors import CheckpointError, MediaError
from vividcli.files import atomic_write_bytes, fsync_path, temp_path

if TYPE_CHECKING:  # torch is imported lazily: `cache ls` / `clean` should not pay ~5 s for it
    import torch

__all__ = [
    "ENV_CACHE_DIR", "STATE_ENTRY", "STATUSES",
    "cache_root", "canonical_json", "input_identity", "checkpoint_identity", "job_key",
    "EntryInfo", "JobInfo", "JobCache", "save_state", "load_state",
]

log = logging.getLogger("vividcli.cache")

ENV_CACHE_DIR = "VIVIDVR_CACHE_DIR"
STATE_ENTRY = "state"
STATUSES = ("running", "interrupted", "done", "failed")
_MIB = 1 << 20
_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,100}\Z")  # no dots: keeps sidecars and data files apart
_RNG_KEY = "__rng_state__"
_BULKY_KINDS = ("tensors", "bytes")


# ---------------------------------------------------------------- identities and keys


def cache_root(cli_value: Path | None = None) -> Path:
    """The cache root: `--cache-dir`, else $VIVIDVR_CACHE_DIR, else the platform user cache dir."""
    env = os.environ.get(ENV_CACHE_DIR, "").strip()
    if cli_value is not None:
        chosen = Path(cli_value)
    elif env:
        chosen = Path(env)
    else:
        chosen = Path(platformdirs.user_cache_dir("vividvr"))
    return chosen.expanduser().absolute()


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def input_identity(path: Path) -> str:
    """Cheap identity of an input video file or image-sequence folder (sha256 hex).

    A file is identified by size + mtime_ns + sha256 of its first and last MiB; a folder by the
    sorted (name, size, mtime_ns) of its non-hidden files. Hashing a 10 GB video in full takes
    a minute or more on every run, and an edit that keeps size, mtime and both ends identical
    is not a realistic accident. The path is not part of it, so a renamed input still resumes.
    """
    path = Path(path)
    try:
        st = path.stat()
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            record: dict[str, Any] = {
                "kind": "dir",
                "files": [[p.name, s.st_size, s.st_mtime_ns] for p in files for s in [p.stat()]],
            }
        else:
            record = {"kind": "file", "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                      "ends": _head_tail_sha256(path, st.st_size)}
    except FileNotFoundError as e:
        raise MediaError(f"input not found: {e.filename}") from e
    return _sha256_hex(canonical_json(record))


def _head_tail_sha256(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(_MIB))
        if size > 2 * _MIB:
            f.seek(size - _MIB)
        h.update(f.read(_MIB))  # files up to 2 MiB end up hashed in full
    return h.hexdigest()


def checkpoint_identity(ckpt_dir: Path) -> str:
    """Cheap identity of a checkpoint folder (or file): relative paths, sizes, mtimes, hashed.

    Symlinks are followed (Hugging Face snapshots are links to blobs); hidden files and folders
    (e.g. `.cache/huggingface` download metadata) are skipped because they change without the
    weights changing.
    """
    root = Path(ckpt_dir)
    if root.is_file():
        files = [(root.name, root)]
    elif root.is_dir():
        files = []
        for d, dirs, names in os.walk(root, followlinks=True):
            dirs[:] = [x for x in dirs if not x.startswith(".")]
            files += [(Path(d, n).relative_to(root).as_posix(), Path(d, n))
                      for n in names if not n.startswith(".")]
    else:
        raise CheckpointError(f"checkpoint folder not found: {root}")
    records = sorted([rel, p.stat().st_size, p.stat().st_mtime_ns] for rel, p in files)
    return _sha256_hex(canonical_json({"kind": "checkpoint", "files": records}))


def job_key(*, input_id: str, checkpoint_id: str, options: Mapping[str, Any],
            format_version: int) -> str:
    """sha256 of the canonical JSON of everything that changes the numbers of the result.

    `options` must hold plain JSON values (normalise Paths, dtypes, tuples first); 1 and 1.0 give
    different keys, so pass values exactly as the sampler uses them. Bump `format_version`
    whenever the meaning of cached entries changes.
    """
    record = {"input": input_id, "checkpoint": checkpoint_id, "options": dict(options),
              "format_version": int(format_version)}
    try:
        return _sha256_hex(canonical_json(record))
    except (TypeError, ValueError) as e:
        raise TypeError(f"job options must be plain JSON values: {e}") from e


# ---------------------------------------------------------------- atomic files


def _fsync_and_hash(path: Path) -> tuple[str, int]:
    """Hash what really is on disk (page cache) after the writer closed it, and make it durable."""
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(4 * _MIB):
            h.update(chunk)
            size += len(chunk)
        os.fsync(f.fileno())  # flushes the file's pages whichever fd is used
    return h.hexdigest(), size


# ---------------------------------------------------------------- job cache


@dataclass(frozen=True)
class EntryInfo:
    """The manifest record of one entry (what `<name>.json` holds)."""

    name: str
    kind: str  # "tensors" | "json" | "bytes"
    file: str  # data file name inside entries/
    size: int
    sha256: str
    meta: dict[str, Any]
    written: str


@dataclass(frozen=True)
class JobInfo:
    """job.json: what a person (and `cache ls`) needs to recognise a job."""

    input: str
    output: str
    options: dict[str, Any]
    status: str = "running"  # one of STATUSES
    progress: dict[str, Any] = field(default_factory=dict)  # e.g. {"step": 12, "steps": 50}
    key: str = ""
    created: str = ""  # ISO 8601, UTC
    updated: str = ""
    format_version: int = 0


@dataclass(frozen=True)
class JobCache:
    """The cache of one job, `<root>/jobs/<key>/`. Hold `lock()` while writing to it.

    Readers verify size and sha256 of every entry; a missing, truncated or corrupt entry is
    deleted, reported through `logging` (logger "vividcli.cache") and `on_problem`, and treated
    as absent. Writers never leave a half-written entry visible (see `_put`).
    """

    dir: Path
    on_problem: Callable[[str], None] | None = None

    @classmethod
    def open(cls, root: Path, key: str, *, on_problem: Callable[[str], None] | None = None,
             ) -> JobCache:
        return cls(Path(root) / "jobs" / key, on_problem)

    @property
    def key(self) -> str:
        return self.dir.name

    @property
    def entries_dir(self) -> Path:
        return self.dir / "entries"

    def lock(self, *, wait_s: float = 1.0) -> JobLock:
        return JobLock(self.dir, wait_s=wait_s)

    # -- writing

    def put_tensors(self, name: str, tensors: Mapping[str, torch.Tensor],
                    meta: dict[str, Any] | None = None) -> EntryInfo:
        """Store tensors (moved to CPU, made contiguous) as a safetensors file."""
        from safetensors.torch import save_file

        cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        return self._put(name, "tensors", "safetensors", lambda p: save_file(cpu, str(p)), meta)

    def put_json(self, name: str, obj: Any, meta: dict[str, Any] | None = None) -> EntryInfo:
        data = json.dumps(obj, indent=1, sort_keys=True, allow_nan=False).encode("utf-8")
        return self._put(name, "json", "json", lambda p: p.write_bytes(data), meta)

    def put_bytes(self, name: str, data: bytes, meta: dict[str, Any] | None = None) -> EntryInfo:
        return self._put(name, "bytes", "bin", lambda p: p.write_bytes(data), meta)

    def _put(self, name: str, kind: str, ext: str, write: Callable[[Path], None],
             meta: dict[str, Any] | None) -> EntryInfo:
        """Data file first, then the sidecar (the commit point), then drop the old data file.

        A kill at any instant leaves the old entry (old sidecar -> old file, still there), the
        new one, or for a first write no entry; garbage is only hidden temps and orphan files.
        """
        _check_name(name)
        self.entries_dir.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(self.entries_dir, name)
        try:
            write(tmp)
            digest, size = _fsync_and_hash(tmp)
            data_file = f"{name}.{digest[:16]}.{ext}"
            os.replace(tmp, self.entries_dir / data_file)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_path(self.entries_dir)  # the data file is durable before anything points at it
        old = self._read_record(name)
        info = EntryInfo(name, kind, data_file, size, digest, dict(meta or {}), _now_iso())
        atomic_write_bytes(self._sidecar(name), _seal(info.__dict__))
        if old is not None and old.file != data_file:
            (self.entries_dir / old.file).unlink(missing_ok=True)
        return info

    # -- reading

    def get_tensors(self, name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """(tensors on CPU, meta) or None if absent or dropped as damaged.

        Decodes the very bytes that were verified (not an mmap of the file, which could change
        under us), so peak memory is about twice the entry's size.
        """
        from safetensors.torch import load

        got = self._read_verified(name, "tensors")
        if got is None:
            return None
        try:
            return load(got[1]), dict(got[0].meta)
        except Exception as e:  # verified bytes that safetensors rejects: never trust them
            self.discard(name, f"unreadable ({e})")
            return None

    def get_json(self, name: str) -> Any | None:
        data = self.get_bytes(name, kind="json")
        return None if data is None else json.loads(data)

    def get_bytes(self, name: str, *, kind: str = "bytes") -> bytes | None:
        got = self._read_verified(name, kind)
        return None if got is None else got[1]

    def has(self, name: str) -> bool:
        """Cheap check: a valid sidecar and a data file of the right size (no hashing)."""
        info = self._read_record(name)
        try:
            return info is not None and (self.entries_dir / info.file).stat().st_size == info.size
        except FileNotFoundError:
            return False

    def entries(self) -> list[EntryInfo]:
        if not self.entries_dir.is_dir():
            return []
        names = [p.stem for p in self.entries_dir.glob("*.json") if _NAME_RE.match(p.stem)]
        return [i for i in (self._read_record(n) for n in sorted(names)) if i is not None]

    def _read_verified(self, name: str, kind: str) -> tuple[EntryInfo, bytes] | None:
        info = self._record_of_kind(name, kind)
        if info is None:
            return None
        try:
            data = (self.entries_dir / info.file).read_bytes()
            problem = None
            if (len(data), _sha256_hex(data)) != (info.size, info.sha256):
                problem = _mismatch(len(data), info)
        except FileNotFoundError:
            problem = "missing its data file"
        if problem:
            self.discard(name, problem)
            return None
        return info, data

    def _record_of_kind(self, name: str, kind: str) -> EntryInfo | None:
        info = self._read_record(name)
        if info is not None and info.kind != kind:
            raise ValueError(f"cache entry {name!r} holds {info.kind}, not {kind}")
        return info

    def _read_record(self, name: str) -> EntryInfo | None:
        _check_name(name)
        try:
            raw = self._sidecar(name).read_bytes()
        except FileNotFoundError:
            return None
        try:
            return EntryInfo(**_unseal(raw))
        except (ValueError, TypeError, KeyError) as e:  # torn by bit rot or a person: drop it
            self._report(f"cache entry {name!r} of job {self.key[:12]} has a bad manifest ({e}); "
                         "dropped, it will be recomputed")
            self._sidecar(name).unlink(missing_ok=True)
            return None

    def _sidecar(self, name: str) -> Path:
        return self.entries_dir / f"{name}.json"

    # -- deleting

    def delete(self, name: str) -> bool:
        """Remove an entry: sidecar first (the entry is gone at once), then its data file."""
        info = self._read_record(name)
        if info is None:
            return False
        self._sidecar(name).unlink(missing_ok=True)
        (self.entries_dir / info.file).unlink(missing_ok=True)
        return True

    def drop_bulky(self, keep: Iterable[str] = ()) -> int:
        """Delete tensor/bytes entries not named in `keep` (json stays), then sweep; bytes freed."""
        keep = set(keep)
        freed = 0
        for info in self.entries():
            if info.kind in _BULKY_KINDS and info.name not in keep and self.delete(info.name):
                freed += info.size
        return freed + self.sweep()

    def sweep(self) -> int:
        """Delete temps and data files no sidecar points at (left by kills); bytes freed.

        Only call this while holding the job lock: another writer's temp files look the same.
        """
        live = {i.file for i in self.entries()}
        garbage = list(self.dir.glob(".tmp-*"))  # from an interrupted job.json write
        if self.entries_dir.is_dir():
            garbage += [p for p in self.entries_dir.iterdir() if p.name not in live
                        and not (p.suffix == ".json" and _NAME_RE.match(p.stem))]
        freed = 0
        for p in garbage:
            freed += p.stat().st_size
            p.unlink(missing_ok=True)
        return freed

    def discard(self, name: str, problem: str) -> None:
        """Delete an entry found unusable, reporting `problem` (e.g. "truncated") as a warning."""
        self._report(f"cache entry {name!r} of job {self.key[:12]} is {problem}; "
                     "dropped, it will be recomputed")
        self.delete(name)

    def _report(self, message: str) -> None:
        log.warning("%s", message)
        if self.on_problem is not None:
            self.on_problem(message)

    # -- job.json

    def write_info(self, info: JobInfo) -> JobInfo:
        """Write job.json atomically, stamping key, `updated` and `created` (kept on resume)."""
        if info.status not in STATUSES:
            raise ValueError(f"job status must be one of {STATUSES}, not {info.status!r}")
        now = _now_iso()
        old = self.read_info() if not info.created else None  # a resumed job keeps `created`
        info = replace(info, key=self.key, created=info.created or (old and old.created) or now,
                       updated=now)
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.dir / "job.json",
                           json.dumps(info.__dict__, indent=2, sort_keys=True).encode("utf-8"))
        return info

    def read_info(self) -> JobInfo | None:
        try:
            return JobInfo(**json.loads((self.dir / "job.json").read_bytes()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as e:
            log.warning("job.json of job %s is unreadable (%s)", self.key[:12], e)
            return None

    def update_info(self, **changes: Any) -> JobInfo:
        """Change fields of job.json, e.g. `update_info(status="done", progress={...})`."""
        info = self.read_info()
        if info is None:
            raise FileNotFoundError(f"no job.json in {self.dir}; call write_info first")
        return self.write_info(replace(info, **changes))


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise ValueError(f"cache entry names are 1-100 of [A-Za-z0-9_-], not {name!r}")


def _seal(record: dict[str, Any]) -> bytes:
    # A checksum over the sidecar itself: a flipped bit in `meta` or `sha256` is caught too.
    body = dict(record)
    body["check"] = _sha256_hex(canonical_json(record))
    return json.dumps(body, indent=1, sort_keys=True, allow_nan=False).encode("ascii")


def _unseal(raw: bytes) -> dict[str, Any]:
    body = json.loads(raw)
    if not isinstance(body, dict):
        raise ValueError("not a JSON object")
    check = body.pop("check")
    if _sha256_hex(canonical_json(body)) != check:
        raise ValueError("manifest checksum mismatch")
    return body


def _mismatch(size: int, info: EntryInfo) -> str:
    if size < info.size:
        return f"truncated ({size} of {info.size} bytes)"
    if size != info.size:
        return f"the wrong size ({size} instead of {info.size} bytes)"
    return "corrupt (sha256 mismatch)"


# ---------------------------------------------------------------- denoising state


def save_state(cache: JobCache, tensors: Mapping[str, torch.Tensor], step_index: int,
               rng_state: torch.Tensor, *, name: str = STATE_ENTRY) -> None:
    """Save the latest denoising state: tensors (latents etc.), a step index in the caller's
    convention (e.g. `DenoiseState.step`, the next step to run) and the RNG state.

    It is one `put_tensors`: the new state goes to a new content-named file, the sidecar is
    switched to it atomically, then the old file is deleted, so a kill at any instant leaves
    exactly one valid state (the old or the new). Use a different `name` per clip if needed.
    """
    import torch

    if _RNG_KEY in tensors:
        raise ValueError(f"{_RNG_KEY!r} is reserved for the RNG state")
    if rng_state.dtype != torch.uint8:
        raise ValueError("rng_state must be a torch.ByteTensor (torch.get_rng_state())")
    payload = {**tensors, _RNG_KEY: rng_state}
    cache.put_tensors(name, payload, meta={"step": int(step_index), "what": "denoising-state"})


def load_state(cache: JobCache, *, name: str = STATE_ENTRY,
               ) -> tuple[dict[str, torch.Tensor], int, torch.Tensor] | None:
    """(tensors, step_index, rng_state) of the last good `save_state`, or None."""
    got = cache.get_tensors(name)
    if got is None:
        return None
    tensors, meta = got
    rng, step = tensors.pop(_RNG_KEY, None), meta.get("step")
    if rng is None or not isinstance(step, int):
        cache.discard(name, "not a denoising state")
        return None
    return tensors, step, rng
