"""Frame sizes through the pipeline (reference rules); the resizes themselves are in stages/resize.py.

    input (H, W)
      -> upscaled: bicubic by a scale factor, size floor(H * factor)
      -> gen size: rounded up to a multiple of 8 only when smaller than one
         pixel tile (tile_size * 8), to 16 where 8 would give an odd latent
         count (the reference crashes there); larger sizes are left as they are
      -> VAE input: the gen size floored to a multiple of 8, reached by a
         *nearest-neighbour* resize of the upscaled video (diffusers VideoProcessor)
      -> latent grid: VAE input / 8
    and after decoding, frames are resized (bilinear) back to the upscaled size.

diffusers 0.42.1 `VideoProcessor(vae_scale_factor=8).preprocess_video(video, height, width)`
for a 4-D float tensor [F, C, H, W] does exactly what the reference (vendored
diffusers 0.31) does: `get_default_height_width` floors the requested size to a
multiple of 8 (x - x % 8), `VaeImageProcessor.resize` calls
`F.interpolate(image, size=(h, w))` with the default mode "nearest", then
`normalize` maps [0, 1] to [-1, 1] (skipped, with a warning, if the input has
negative values) and the result is permuted to [1, C, F, h, w]. That is how
64x105 becomes 64x104 in golden case c; the stock function is called here and
matches the golden VAE input bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vividcli.errors import UsageError
from vividcli.planning.clips import latent_frame_count

VAE_SCALE = 8  # spatial compression of the CogVideoX VAE
SHORT_SIDE_TARGET = 1024.0  # upscale == 0 resizes the short side to this
PATCH_SIZE = 2  # spatial patch size of the CogVideoX1.5 transformer
PATCH_SIZE_T = 2  # temporal patch size of the CogVideoX1.5 transformer


@dataclass(frozen=True)
class GenerationGeometry:
    """All spatial sizes of one run, (height, width) pairs in pixels unless noted."""

    input_size: tuple[int, int]
    scale_factor: float  # the factor handed to the bicubic kernel (1.0: no resize)
    upscaled_size: tuple[int, int]  # control video; also the output size
    gen_size: tuple[int, int]  # pipeline height/width; caption tiles live here
    vae_size: tuple[int, int]  # what the VAE encodes / decodes
    latent_size: tuple[int, int]  # latent grid (vae_size / 8)

    @property
    def resizes_input(self) -> bool:
        return self.scale_factor != 1.0


def upscale_factor(height: int, width: int, upscale: float) -> float:
    """Scale factor the reference applies: 0 means short side to 1024, else `upscale` itself."""
    if upscale < 0:
        raise UsageError(f"upscale must be 0 (short side to 1024 px) or a positive factor, got {upscale}")
    if upscale == 0:
        return SHORT_SIDE_TARGET / min(height, width)
    return float(upscale)


def scaled_size(size: int, factor: float) -> int:
    """Output length of F.interpolate(scale_factor=factor): floor(size * factor) in float64.

    Note the float rounding: with upscale 0 the short side can come out as 1023,
    e.g. for 49, 98 or 103 px, because 1024/size*size is a hair below 1024.
    """
    return math.floor(size * factor)


def gen_length(size: int, tile_size: int) -> int:
    """Pipeline length for one axis: next multiple of 8 if below one pixel tile, else unchanged.

    Below one tile, the axis is a single tile as long as the latent axis, and the transformer
    patchifies it in pairs: where the reference's rule gives an odd latent count (e.g. 854 px ->
    107 latents) the reference crashes, so we take one more latent (864 px -> 108). Everywhere the
    reference runs, the sizes are its own.
    """
    if size >= tile_size * VAE_SCALE:
        return size
    latents = math.ceil(size / VAE_SCALE)
    return VAE_SCALE * (latents + latents % PATCH_SIZE)


def vae_length(gen: int) -> int:
    """VideoProcessor target length: gen floored to a multiple of 8."""
    return gen - gen % VAE_SCALE


def plan_geometry(height: int, width: int, upscale: float, tile_size: int) -> GenerationGeometry:
    """All sizes for an input of height x width, `upscale` as on the command line."""
    factor = upscale_factor(height, width, upscale)
    if factor == 1.0:
        # The reference skips the resize for upscale 1 (and a factor of exactly
        # 1 from upscale 0 would reproduce the input anyway).
        upscaled = (height, width)
    else:
        upscaled = (scaled_size(height, factor), scaled_size(width, factor))
    if min(upscaled) < 1:
        raise UsageError(f"upscale {upscale} shrinks the {height}x{width} input to nothing; use a larger factor")
    gen = (gen_length(upscaled[0], tile_size), gen_length(upscaled[1], tile_size))
    vae = (vae_length(gen[0]), vae_length(gen[1]))
    return GenerationGeometry(
        input_size=(height, width),
        scale_factor=factor,
        upscaled_size=upscaled,
        gen_size=gen,
        vae_size=vae,
        latent_size=(vae[0] // VAE_SCALE, vae[1] // VAE_SCALE),
    )


def latent_padding_frames(latent_frames: int, patch_size_t: int | None = PATCH_SIZE_T) -> int:
    """Latents prepended so the time axis divides by the temporal patch size (none without one).

    The reference grows the axis by `latent_frames % patch_size_t` and prepends
    that many leading latents; this only yields a multiple of the patch size for
    patch_size_t == 2 (the CogVideoX1.5 value), which is all that is supported.
    For 8k+1 frames there are 2k+1 latents, so exactly one copy of the first
    latent is prepended (and dropped again before decoding).
    """
    if not patch_size_t or patch_size_t == 1:
        return 0
    if patch_size_t != PATCH_SIZE_T:
        raise ValueError(f"only temporal patch size 2 is supported, got {patch_size_t}")
    return latent_frames % patch_size_t


def latent_shape(num_padded_frames: int, geometry: GenerationGeometry, channels: int = 16) -> tuple[int, ...]:
    """[B, T, C, h, w] of the transformer latents for an 8k+1-frame video (T includes padding)."""
    vae_latents = latent_frame_count(num_padded_frames)
    frames = vae_latents + latent_padding_frames(vae_latents)
    return (1, frames, channels, *geometry.latent_size)
