"""Optional dependencies in tests: skipped on a light install, required in CI."""

from __future__ import annotations

import importlib
import os

import pytest


def import_or_skip(name: str, reason: str):
    """`pytest.importorskip`, except in CI (VIVIDVR_REQUIRE_EXTRAS=1), where a missing optional
    dependency fails the test: the text fix and Real-ESRGAN tests must run there, not skip."""
    if os.environ.get("VIVIDVR_REQUIRE_EXTRAS"):
        return importlib.import_module(name)
    return pytest.importorskip(name, reason=reason)
