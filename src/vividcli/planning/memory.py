"""Peak device and host memory of each stage of a restoration, per offload mode and weight format.

Every peak is a sum of named terms (`device_memory` returns them too, for `vividvr plan --json` and
docs/planning.md): the weights on the device in that stage, plus what the stage computes with. The
activation terms count the tensors alive at the measured peak of each stage on the simulated GPU
(`benchmarks/vram_dry_run.py`, FakeTensorMode; docs/benchmarks.md), in units of tensor sizes the
plan determines, so they scale with the tile, the clip, the frame size and the CFG batch.
"""

from __future__ import annotations

from vividcli.planning.sizes import ModelSizes, RunShape

FP32 = 4
# Denoising peak, inside the rotary embedding of a DiT block (query/key of the video tokens): alive are
# the ControlNet's states (one per ControlNet block), TEXT_VIDEO_TENSORS of [B, text + video, hidden]
# (the embedded tokens, the attention input, value, normalised query and key), VIDEO_TENSORS of
# [B, video, hidden] (block input, norm output, rotated half) and ROTARY_FP32 float32 copies of the query.
TEXT_VIDEO_TENSORS = 5
VIDEO_TENSORS = 3
ROTARY_FP32 = 3
# Clip-sized tensors on the device while one clip is denoised: its latents and control latents and the
# three blending sums (latents, x0, weights) of `denoise_clip_step`.
CLIP_LATENT_TENSORS = 5
# VAE encode: the clip in the VAE dtype plus, per tile and frame batch, the encoder's working set in
# units of [frames, first channel count, tile] tensors.
ENCODE_WORKING_SET = 8.0
# Decode with the colour fix: the decoded float32 frames, the re-read input frames on the device, and
# two AdaIN intermediates (subtract, divide), all at the output size.
COLOR_FIX_FRAME_TENSORS = 4
DECODE_WORKING_SET = 4.0
# group: diffusers' block-level group offloading keeps the model's own top-level layers (embeddings,
# projector, output) and, with CUDA streams, the running block and the prefetched next one.
GROUP_BLOCKS = 2
# Host frames of one clip at the output size, float32: while encoding, the decoded frames, their stack,
# the [F, C, H, W] copy and the VAE input; while decoding, the re-read input and the output frames.
ENCODE_FRAME_COPIES = 4
DECODE_FRAME_COPIES = 2


def weight_bytes(params: int, fp8_params: int, weights: str, dtype_bytes: int) -> int:
    """Bytes of a model's weights: `--weights fp8` stores `fp8_params` of them in one byte each."""
    stored_fp8 = fp8_params if weights == "fp8" else 0
    return stored_fp8 + (params - stored_fp8) * dtype_bytes


def denoiser_weights(sizes: ModelSizes, weights: str, e: int) -> int:
    return (weight_bytes(sizes.transformer_params, sizes.transformer_fp8_params, weights, e)
            + weight_bytes(sizes.controlnet_params, sizes.controlnet_fp8_params, weights, e))


def streamed_weights(sizes: ModelSizes, offload: str, weights: str, e: int) -> int:
    """Denoiser weights on the device while denoising in `group` and `sequential` modes."""
    scale = weight_bytes(sizes.block_params, sizes.block_params, weights, e) / sizes.block_params
    if offload == "sequential":  # one leaf layer at a time (no prefetch without streams)
        return round(sizes.largest_layer_params * scale)
    blocks = sizes.layers * sizes.block_params + sizes.layers * sizes.connector_params
    top = sizes.transformer_params - blocks  # embeddings, projector, output layers
    return round((top + GROUP_BLOCKS * (sizes.block_params + sizes.connector_params)) * scale)


def denoise_activations(shape: RunShape, sizes: ModelSizes) -> dict[str, int]:
    """Activation terms of one tile's ControlNet + transformer call (batch `cfg_batch`)."""
    e, b, d = shape.dtype_bytes, shape.cfg_batch, sizes.hidden
    n = shape.video_tokens(sizes)
    video, text_video = b * n * d * e, b * (n + sizes.text_length) * d * e
    states = sizes.controlnet_layers * video if shape.controlnet_on else 0
    tile = shape.latent_frames * sizes.latent_channels * shape.tile_latent[0] * shape.tile_latent[1] * e
    clip = shape.latent_frames * sizes.latent_channels * shape.latent_size[0] * shape.latent_size[1] * e
    return {"controlnet_states": states, "text_video_tensors": TEXT_VIDEO_TENSORS * text_video,
            "video_tensors": VIDEO_TENSORS * video, "rotary_fp32": ROTARY_FP32 * b * n * d * FP32,
            "rope_tables": 2 * n * sizes.head_dim * FP32, "tile_inputs": 2 * b * tile,
            "clip_tensors": CLIP_LATENT_TENSORS * clip}


def encode_activations(shape: RunShape, sizes: ModelSizes) -> dict[str, int]:
    """The clip on the device in the VAE dtype, and the tiled encoder's working set."""
    e = shape.dtype_bytes
    height, width = shape.vae_size
    tile = min(height, sizes.vae_tile[0]) * min(width, sizes.vae_tile[1])
    frames = min(shape.clip_frames, sizes.vae_frame_batch + 1)
    latents = 2 * shape.latent_frames * sizes.latent_channels * shape.latent_size[0] * shape.latent_size[1] * FP32
    return {"clip_video": 3 * shape.clip_frames * height * width * e,
            "encoder_working_set": round(ENCODE_WORKING_SET * frames * sizes.vae_channels[0] * tile * e),
            "posterior": latents}


def decode_activations(shape: RunShape, sizes: ModelSizes) -> dict[str, int]:
    """The decoded clip and the colour fix (float32 frames at the output size), or the VAE's working set."""
    e = shape.dtype_bytes
    frames = shape.clip_frames * 3 * shape.output_size[0] * shape.output_size[1] * FP32
    height, width = shape.vae_size
    tile = min(height, sizes.vae_tile[0]) * min(width, sizes.vae_tile[1])
    decoder = round(DECODE_WORKING_SET * 12 * sizes.vae_channels[0] * tile * e)
    decoded = 3 * shape.clip_frames * height * width * e
    if shape.color_fix:
        return {"color_fix_frames": COLOR_FIX_FRAME_TENSORS * frames}
    return {"decoded_frames": frames + decoded, "decoder_working_set": decoder}


def t5_activations(shape: RunShape, sizes: ModelSizes) -> dict[str, int]:
    """One batch of prompts (one per tile) through T5 with eager attention (float32 softmax)."""
    e, length, prompts = shape.dtype_bytes, sizes.text_length, shape.tiles
    scores = prompts * sizes.t5_heads * length * length * (e + FP32)
    hidden = prompts * length * (2 * sizes.t5_ff + 4 * sizes.t5_dim) * e
    return {"t5_scores": scores, "t5_hidden": hidden}


def device_memory(shape: RunShape, sizes: ModelSizes, offload: str, weights: str) -> tuple[dict, dict]:
    """(stage -> peak device bytes, term -> bytes) for `offload` and `weights`."""
    e = shape.dtype_bytes
    denoisers = denoiser_weights(sizes, weights, e)
    resident = denoisers if offload == "none" else 0  # outside the denoising stage
    in_denoise = denoisers if offload in ("none", "model") else streamed_weights(sizes, offload, weights, e)
    vae, t5 = sizes.vae_params * e, sizes.t5_params * e
    acts = {"encode": encode_activations(shape, sizes), "text": t5_activations(shape, sizes),
            "denoise": denoise_activations(shape, sizes), "decode": decode_activations(shape, sizes)}
    device = {
        "load": resident,
        "encode": resident + vae + sum(acts["encode"].values()),
        "text": resident + t5 + sum(acts["text"].values()),
        "denoise": in_denoise + sum(acts["denoise"].values()),
        "merge": in_denoise + acts["denoise"]["rope_tables"],
        "decode": resident + vae + sum(acts["decode"].values()),
    }
    terms = {"denoiser_weights": denoisers, "denoise_weights_on_device": in_denoise, "vae_weights": vae,
             "t5_weights": t5, **{k: v for stage in acts.values() for k, v in stage.items()}}
    return device, terms


def host_memory(shape: RunShape, sizes: ModelSizes, offload: str, weights: str) -> dict[str, int]:
    """Stage -> peak host bytes: the weights kept on the host, the frames of one clip, every clip's state.

    A stage that moves a model to the device starts with it still on the host, so its peak counts it.
    """
    e = shape.dtype_bytes
    denoisers = denoiser_weights(sizes, weights, e)
    vae, t5 = sizes.vae_params * e, sizes.t5_params * e
    # Weights load onto the host in the compute dtype. Group offloading with CUDA streams keeps a pinned
    # copy of every group besides the loaded one until the group's first use (in the first denoising call).
    pinned = denoisers if offload == "group" else 0
    at_rest = vae + t5 + (0 if offload == "none" else denoisers)
    frames = shape.clip_frames * 3 * shape.output_size[0] * shape.output_size[1] * FP32
    clip = shape.latent_frames * sizes.latent_channels * shape.latent_size[0] * shape.latent_size[1] * e
    prompts = 2 * shape.tiles * sizes.text_length * sizes.t5_dim * e
    states = shape.clips * (3 * clip + prompts)  # control latents, latents, previous x0; prompt embeddings
    on_device_while_denoising = denoisers if offload == "model" else 0
    return {
        "load": denoisers + vae + t5 + pinned,
        "encode": at_rest + pinned - vae + ENCODE_FRAME_COPIES * frames + states,
        "text": at_rest + pinned + states,
        "denoise": at_rest + pinned + states,
        "merge": at_rest - on_device_while_denoising + states,
        "decode": at_rest - vae + DECODE_FRAME_COPIES * frames + states,
    }
