"""Shared test fixtures: the reference fixture folder and tiny checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _reference_dir() -> Path | None:
    env = os.environ.get("VIVIDVR_REFERENCE")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "fixtures" / "reference")
    for c in candidates:
        if (c / "golden").is_dir() and (c / "ckpts").is_dir():
            return c
    return None


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    ref = _reference_dir()
    if ref is None:
        if os.environ.get("VIVIDVR_REQUIRE_REFERENCE"):
            pytest.fail("reference fixtures are required in CI but were not found")
        pytest.skip("reference fixtures not found (set VIVIDVR_REFERENCE)")
    return ref


@pytest.fixture(scope="session")
def reference_ckpt_dir(reference_dir: Path) -> Path:
    return reference_dir / "ckpts"


@pytest.fixture(scope="session")
def tiny_ckpt_dir(tmp_path_factory) -> Path:
    """A tiny random checkpoint in the official layout, written once per test session."""
    from vividcli.testing.checkpoints import ensure_tiny_checkpoint

    return ensure_tiny_checkpoint(tmp_path_factory.getbasetemp() / "tiny-ckpts")

