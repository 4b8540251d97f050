"""Offload modes: every mode restores exactly what `none` restores (on the CPU only the place of the
weights differs, so the frames are bit-identical), through diffusers' group-offloading hooks for
`group` and `sequential`. Device placement itself is checked on a simulated GPU by the dry run
(benchmarks/vram_dry_run.py, tests/test_vram_dry_run.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from test_golden_pipeline import Case
from vividcli.cli import app
from vividcli.media.reader import ArraySource
from vividcli.models.loading import load_models
from vividcli.models.offload import Placement, resolve_offload
from vividcli.pipeline import restore_frames

pytestmark = pytest.mark.slow


def restore_case(reference_dir, reference_ckpt_dir, offload: str, name: str = "case_d_temporal_aggregation"):
    models = load_models(reference_ckpt_dir, torch.float32, "cpu", offload=offload)
    case = Case(reference_dir, name)
    source = ArraySource(list(case.input.astype(np.float32) / np.float32(255)))
    return models, np.stack(list(restore_frames(models, source, case.captions, case.options)))


@pytest.fixture(scope="module")
def plain_frames(reference_dir, reference_ckpt_dir) -> np.ndarray:
    return restore_case(reference_dir, reference_ckpt_dir, "none")[1]


@pytest.mark.parametrize("mode", ["model", "group", "sequential"])
def test_every_offload_mode_restores_what_none_restores(reference_dir, reference_ckpt_dir, plain_frames, mode):
    models, frames = restore_case(reference_dir, reference_ckpt_dir, mode)
    assert models.placement.mode == mode
    if mode in ("group", "sequential"):  # the library's hooks are really installed
        assert any(getattr(m, "_diffusers_hook", None) is not None for m in models.transformer.modules())
    np.testing.assert_array_equal(frames, plain_frames)


def test_auto_is_none_on_the_cpu() -> None:
    assert resolve_offload("auto", "cpu") == "none"
    assert resolve_offload("group", "cpu") == "group"


def test_unknown_modes_are_refused() -> None:
    with pytest.raises(ValueError, match="offload mode"):
        Placement((), "cpu", "everything")
    result = CliRunner().invoke(app, ["restore", "x.mp4", "-o", "y.mp4", "--offload", "everything"])
    assert result.exit_code == 2 and "--offload must be one of" in result.stderr
