"""Low-level helpers shared by the cache modules (store, lock); imports nothing of vividcli."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON (sorted keys, no spaces, ASCII, no NaN); TypeError on non-JSON values."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
