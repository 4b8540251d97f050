"""`RestorePlan`: everything about one run that follows from the input's shape and the options."""

from __future__ import annotations

from dataclasses import dataclass

from vividcli.config import RestoreOptions
from vividcli.planning.clips import Clip, LatentCopy, plan_temporal, uses_temporal_aggregation, whole_video_clip
from vividcli.planning.geometry import GenerationGeometry, plan_geometry
from vividcli.planning.tiles import Tile, check_tiles_patchable, plan_tiles


@dataclass(frozen=True)
class RestorePlan:
    """Sizes, temporal clips (with the latent merge between them) and spatial tiles of one run."""

    num_frames: int
    geometry: GenerationGeometry
    clips: tuple[Clip, ...]
    merge: tuple[LatentCopy, ...]
    tiles: tuple[Tile, ...]
    tile_size: int  # latent pixels per tile side (stride is half of it)

    @property
    def output_size(self) -> tuple[int, int]:
        return self.geometry.upscaled_size


def plan_restoration(num_frames: int, height: int, width: int, options: RestoreOptions) -> RestorePlan:
    """The plan for an input of `num_frames` frames of height x width, restored with `options`."""
    geometry = plan_geometry(height, width, options.upscale, options.tile_size)
    tiles = tuple(plan_tiles(*geometry.latent_size, options.tile_size, options.tile_size // 2))
    check_tiles_patchable(list(tiles))
    if uses_temporal_aggregation(num_frames, options.clip_frames):
        temporal = plan_temporal(num_frames, options.clip_frames)
        clips, merge = temporal.clips, temporal.merge
    else:
        clips, merge = (whole_video_clip(num_frames),), ()
    return RestorePlan(num_frames, geometry, tuple(clips), tuple(merge), tiles, options.tile_size)
