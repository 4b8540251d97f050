"""dtype rules of the vivid engine: bfloat16 (the CUDA default) runs end to end; float16 is refused.

bfloat16 on the tiny random checkpoint, golden case c on CPU: finite frames at 30.4 dB PSNR against
the float32 golden (case e: 32.2 dB), measured 2026-12-01. A random tiny model under CFG 6
amplifies rounding far more than the trained one would; the test asks for >= 25 dB, and for a real
difference from float32 (< 50 dB) so it cannot pass by silently computing in float32.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_golden_pipeline import Case, psnr, to_uint8
from vividcli.errors import UsageError
from vividcli.media.reader import ArraySource
from vividcli.models.loading import load_models
from vividcli.pipeline import restore_frames

pytestmark = pytest.mark.slow


def test_bfloat16_runs_golden_case_c_on_cpu_close_to_the_float32_golden(reference_dir, reference_ckpt_dir):
    models = load_models(reference_ckpt_dir, torch.bfloat16, "cpu")
    assert {p.dtype for p in models.transformer.parameters()} == {torch.bfloat16}
    case = Case(reference_dir, "case_c_whole_video")
    source = ArraySource(list(case.input.astype(np.float32) / np.float32(255)))
    frames = np.stack(list(restore_frames(models, source, case.captions, case.options)))
    assert frames.dtype == np.float32 and np.isfinite(frames).all()
    quality = psnr(to_uint8(frames), case.expected)
    assert 25 <= quality < 50, quality


def test_float16_is_refused_by_the_python_api_too(reference_ckpt_dir):
    with pytest.raises(UsageError, match="overflow"):
        load_models(reference_ckpt_dir, torch.float16, "cpu")
