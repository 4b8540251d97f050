"""Offload modes: every mode restores exactly what `none` restores (on the CPU only the place of the
weights differs, so the frames are bit-identical), through diffusers' group-offloading hooks for
`group` and `sequential`. Device placement itself is checked on a simulated GPU by the dry run
(benchmarks/vram_dry_run.py, tests/test_vram_dry_run.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from test_golden_pipeline import Case, psnr, to_uint8
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


def test_sequential_cfg_gives_the_batched_result(reference_dir, reference_ckpt_dir) -> None:
    """The two CFG halves at batch 1 instead of one batch of 2: bit-identical on this CPU (measured), and
    at worst float summation order elsewhere."""
    models = load_models(reference_ckpt_dir, torch.float32, "cpu")
    case = Case(reference_dir, "case_c_whole_video")
    frames = {}
    for sequential in (False, True):
        source = ArraySource(list(case.input.astype(np.float32) / np.float32(255)))
        options = dataclasses.replace(case.options, sequential_cfg=sequential)
        frames[sequential] = np.stack(list(restore_frames(models, source, case.captions, options)))
    np.testing.assert_array_equal(frames[True], frames[False])


def test_fp8_weights_are_stored_in_fp8_and_stay_close(reference_dir, reference_ckpt_dir) -> None:
    """fp8 storage of the denoising models (norms, embeddings and the projector stay in the compute
    dtype): golden case c at 30.2 dB against the float32 golden on the tiny checkpoint (measured)."""
    models = load_models(reference_ckpt_dir, torch.float32, "cpu", weights="fp8")
    dtypes = {name: p.dtype for name, p in models.transformer.named_parameters()}
    assert dtypes["transformer_blocks.0.ff.net.0.proj.weight"] == torch.float8_e4m3fn
    assert dtypes["connectors.0.to_q.0.weight"] == torch.float8_e4m3fn
    assert all(d == torch.float32 for n, d in dtypes.items() if n.startswith("control_feat_proj") or "norm" in n)
    case = Case(reference_dir, "case_c_whole_video")
    source = ArraySource(list(case.input.astype(np.float32) / np.float32(255)))
    frames = np.stack(list(restore_frames(models, source, case.captions, case.options)))
    assert np.isfinite(frames).all()
    assert 25 <= psnr(to_uint8(frames), case.expected) < 50


def test_auto_is_none_on_the_cpu() -> None:
    assert resolve_offload("auto", "cpu") == "none"
    assert resolve_offload("group", "cpu") == "group"


def test_unknown_modes_are_refused() -> None:
    with pytest.raises(ValueError, match="offload mode"):
        Placement((), "cpu", "everything")
    result = CliRunner().invoke(app, ["restore", "x.mp4", "-o", "y.mp4", "--offload", "everything"])
    assert result.exit_code == 2 and "--offload must be one of" in result.stderr
