"""Downloading the checkpoints, and the one-line errors when that is not possible.

`download` fetches pinned revisions with `huggingface_hub.snapshot_download(local_dir=...)` (resumable,
its own progress bars) or, for the GitHub release file, with urllib into a `.partial` file that is
size- and sha256-checked before it is renamed into place. Offline mode (`HF_HUB_OFFLINE=1`) and
network failures raise one `VividError` line that says how to copy the files in by hand.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from vividcli.errors import VividError, describe_exception
from vividcli.hub.registry import (
    CHOICES,
    COMPONENTS,
    DOCS_HINT,
    GROUPS,
    Component,
    missing_files,
    pinned_mismatch,
    sha256_file,
)


def download(what: str, ckpt_dir: str | os.PathLike, *, progress: bool = True) -> list[Path]:
    """Download `what` into `ckpt_dir`: a component (`vividvr`, `cogvideox`, `captioner`, `textfix`),
    `default` (vividvr + cogvideox + captioner: what `vividvr restore` uses by default), `required`
    (vividvr + cogvideox: the restoration models alone) or `all`.

    Returns the component folders. Interrupted downloads resume; complete ones are not fetched again.
    Raises a one-line `VividError` when offline mode is on (and the files are not there yet), the network
    fails, or the downloaded files do not form the expected layout.
    """
    if what not in GROUPS:
        raise VividError(f"unknown model {what!r}; choose one of {', '.join(CHOICES)}", exit_code=2)
    root = Path(ckpt_dir)
    return [_download_one(COMPONENTS[name], root, progress=progress) for name in GROUPS[what]]


def _download_one(component: Component, root: Path, *, progress: bool) -> Path:
    target = component.path(root)
    if _offline():
        if target.exists() and not missing_files(component, root):
            return target  # nothing to fetch; offline, so not compared with the pinned revision
        raise VividError(f"cannot download {component.name}: offline mode is on (HF_HUB_OFFLINE=1); "
                         + _hand_copy_hint(component, root))
    if component.repo_id:
        _snapshot(component, root, progress=progress)
    else:
        _fetch_file(component, root, progress=progress)
    missing = missing_files(component, root)
    if missing:
        raise VividError(f"downloaded {component.source} but {missing[0]} is missing: the repository layout "
                         f"differs from the one this version expects; " + _hand_copy_hint(component, root))
    return target


def _offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE")
    if value is not None:
        return value.strip().upper() in {"1", "ON", "YES", "TRUE"}
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:  # pragma: no cover
        return False


def _hand_copy_hint(component: Component, root: Path) -> str:
    return (f"on a machine with network run `vividvr models download --what {component.name}` "
            f"(or fetch {component.source}), then copy {component.hand_copy} into "
            f"{component.path(root)} and check with `vividvr models verify` (see {DOCS_HINT})")


# --------------------------------------------------------------------------------------------- errors

_NETWORK_ERRORS = ("ConnectError", "ConnectTimeout", "ReadTimeout", "TimeoutException", "NetworkError",
                   "ConnectionError", "LocalEntryNotFoundError", "OfflineModeIsEnabled", "URLError",
                   "gaierror", "TimeoutError", "RemoteProtocolError", "ProxyError")


def _exception_chain(exc: BaseException | None) -> Iterator[BaseException]:
    """`exc`, then its `__cause__` (else `__context__`), and so on; each exception once."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _is_network_error(exc: BaseException | None) -> bool:
    return any(k.__name__ in _NETWORK_ERRORS for e in _exception_chain(exc) for k in type(e).__mro__)


def _network_failure(component: Component, root: Path, exc: BaseException) -> VividError:
    *_, cause = _exception_chain(exc)  # the root cause
    return VividError(f"cannot download {component.name}: no network connection ({describe_exception(cause)}); "
                      + _hand_copy_hint(component, root))


# --------------------------------------------------------------------------------------------- fetching

def _snapshot(component: Component, root: Path, *, progress: bool) -> None:
    import huggingface_hub
    from huggingface_hub import errors as hf_errors
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    target = component.path(root)
    target.mkdir(parents=True, exist_ok=True)
    was_disabled = are_progress_bars_disabled()
    if not progress:
        disable_progress_bars()
    try:
        huggingface_hub.snapshot_download(
            component.repo_id,
            revision=component.revision,
            local_dir=target,
            allow_patterns=list(component.allow_patterns) if component.allow_patterns else None,
            ignore_patterns=list(component.ignore_patterns) if component.ignore_patterns else None,
        )
    except (hf_errors.RevisionNotFoundError, hf_errors.RepositoryNotFoundError, hf_errors.GatedRepoError) as exc:
        raise VividError(f"cannot download {component.name} from {component.source}: {describe_exception(exc)}; "
                         + _hand_copy_hint(component, root)) from exc
    except Exception as exc:
        if _is_network_error(exc):
            raise _network_failure(component, root, exc) from exc
        raise VividError(f"download of {component.name} from {component.source} failed ({describe_exception(exc)}); "
                         f"run the same command again to resume") from exc
    finally:
        if not progress and not was_disabled:
            enable_progress_bars()


def _fetch_file(component: Component, root: Path, *, progress: bool) -> None:
    """One file from a URL: `.partial` (resumed with an HTTP range when possible), size + sha256, rename."""
    dest = component.path(root) / component.requires[0][0]
    if dest.is_file() and pinned_mismatch(dest, component) is None:
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    _fetch_partial(component, root, partial, progress=progress, label=dest.name)
    _check_partial(component, partial)
    os.replace(partial, dest)


def _fetch_partial(component: Component, root: Path, partial: Path, *, progress: bool, label: str) -> None:
    """Fill `partial` from the component's URL, resuming what it already holds when the server allows."""
    import urllib.error
    import urllib.request

    from vividcli import __version__

    have = partial.stat().st_size if partial.is_file() else 0
    if component.size is not None and have > component.size:
        partial.unlink()
        have = 0
    request = urllib.request.Request(str(component.url), headers={"User-Agent": f"vividcli/{__version__}"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            resumed = bool(have) and getattr(response, "status", None) == 206
            if not resumed:
                have = 0
            total = component.size or (int(response.headers.get("Content-Length") or 0) + have) or None
            _stream(response, partial, append=resumed, done=have, total=total, progress=progress, label=label)
    except urllib.error.HTTPError as exc:
        if not (exc.code == 416 and have):  # 416: the partial file already holds everything
            raise VividError(f"cannot download {component.name} from {component.url}: HTTP {exc.code} {exc.reason}; "
                             + _hand_copy_hint(component, root)) from exc
    except OSError as exc:  # URLError, socket errors, timeouts, but also a full disk
        if isinstance(exc, urllib.error.URLError) or _is_network_error(exc):
            raise _network_failure(component, root, exc) from exc
        raise VividError(f"download of {component.name} failed ({describe_exception(exc)}); "
                         f"run the same command again to resume") from exc


def _check_partial(component: Component, partial: Path) -> None:
    """Size and sha256 of a finished `.partial` file; a wrong file is deleted."""
    size = partial.stat().st_size
    if component.size is not None and size < component.size:
        raise VividError(f"download of {component.name} stopped at {size} of {component.size} bytes "
                         f"({partial}); run the same command again to resume")
    if component.size is not None and size != component.size:
        partial.unlink()
        raise VividError(f"downloaded {component.url} has {size} bytes, expected {component.size}; "
                         f"the file was deleted, run the command again")
    if component.sha256:
        digest = sha256_file(partial)
        if digest != component.sha256:
            partial.unlink()
            raise VividError(f"downloaded {component.url} has sha256 {digest}, expected {component.sha256}; "
                             f"the file was deleted, run the command again")


def _stream(response, partial: Path, *, append: bool, done: int, total: int | None, progress: bool,
            label: str) -> None:
    from tqdm.auto import tqdm

    with open(partial, "ab" if append else "wb") as f, tqdm(
        total=total, initial=done, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
        disable=not progress, leave=False,
    ) as bar:
        while block := response.read(1 << 20):
            f.write(block)
            bar.update(len(block))
        f.flush()
        os.fsync(f.fileno())
