"""The tiles are planned on vae_size / 8 latents; a VAE whose tiled encode gives another size is refused
in one line (rather than leaving latents outside every tile, which would come out as NaN)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vividcli.config import RestoreOptions
from vividcli.errors import CheckpointError
from vividcli.media.reader import ArraySource
from vividcli.models.loading import load_models
from vividcli.pipeline import prepare_clips
from vividcli.planning.plan import plan_restoration
from vividcli.progress import NullProgress


@pytest.fixture(scope="module")
def models(reference_ckpt_dir):
    return load_models(reference_ckpt_dir, torch.float32, "cpu")  # its VAE tiles at 48x80 px


def prepare(models, width: int):
    source = ArraySource(list(np.random.default_rng(0).random((9, 32, width, 3), dtype=np.float32)))
    plan = plan_restoration(9, 32, width, RestoreOptions(upscale=1, tile_size=4, clip_frames=9))
    captions = [["x"] * len(plan.tiles)]
    return plan, prepare_clips(models, source, plan, captions, torch.Generator().manual_seed(0), NullProgress())


def test_tiled_encode_of_the_checkpoint_vae_fits_the_plan(models):
    assert models.vae.use_tiling and 200 > models.vae.tile_sample_min_width  # 200 px wide: tiled
    plan, prepared = prepare(models, 200)
    assert prepared.conditioning[0].control_latents.shape[-2:] == plan.geometry.latent_size == (4, 25)


def test_a_vae_tiling_that_does_not_fit_is_refused_in_one_line(models, monkeypatch):
    monkeypatch.setattr(models.vae, "tile_sample_min_width", 72)  # stride 57 px: not a whole number of latents
    with pytest.raises(CheckpointError, match=r"encoded 32x200 frames to 4x\d+ latents, not 4x25") as err:
        prepare(models, 200)
    assert "\n" not in str(err.value)
