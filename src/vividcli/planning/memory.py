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
# VAE working sets, in [frames of one call, first channel count, tile] tensors (the encoder reads 8+1
# frames per call, the decoder writes as many): A + B x layers per block, fitted on the simulated full
# CogVideoX VAE (3 layers: 6.59 encode, 12.6 decode) and the tiny test VAE (1 layer: 4.71, 8.85).
ENCODE_A, ENCODE_B = 3.77, 0.94
DECODE_A, DECODE_B = 6.98, 1.87
# The decoder's spatial norms keep a copy of the latents resized to their level (their 1x1 causal convs
# cache every frame they saw): two per norm, latent channels each.
# Copies of the encoder's output (moments) alive at the encode peak: the tile rows, their blend, the
# concatenation, the posterior's std, var and sample, the scaled and padded latents.
MOMENTS_COPIES = 7
# Decode with the colour fix: the decoded float32 frames, the re-read input frames on the device, and
# two AdaIN intermediates (subtract, divide), all at the output size.
COLOR_FIX_FRAME_TENSORS = 4
# Copies of the decoded clip (VAE size, compute dtype) alive at the decode peak: tile rows, blended rows, cat.
DECODED_COPIES = 3
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
    """Denoiser weights on the device while denoising in `group` and `sequential` modes.

    sequential: one leaf layer at a time (no prefetch without CUDA streams). group: diffusers'
    block-level offloading makes each entry of a module list a group (DiT blocks, connectors, projector
    blocks) and everything else one top-level group; with CUDA streams the next group is fetched while
    one runs. Blocks and connectors alternate, so the largest pair is a block with its connector (or,
    in small models, two projector blocks).
    """
    if offload == "sequential":  # the largest layer (a feed-forward Linear) is stored in fp8 too
        return weight_bytes(sizes.largest_layer_params, sizes.largest_layer_params, weights, e)
    block = (weight_bytes(sizes.block_params, sizes.block_fp8_params, weights, e)
             + weight_bytes(sizes.connector_params, sizes.connector_fp8_params, weights, e))
    return sizes.top_level_params * e + max(block, sizes.projector_pair_params * e)  # the projector stays bf16


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


def vae_call_unit(shape: RunShape, sizes: ModelSizes) -> int:
    """Bytes per channel of one VAE call: the frames of one call on one tile."""
    height, width = shape.vae_size
    frames = min(shape.clip_frames, sizes.vae_frame_batch + 1)
    return frames * min(height, sizes.vae_tile[0]) * min(width, sizes.vae_tile[1]) * shape.dtype_bytes


def zq_copy_channels(sizes: ModelSizes) -> float:
    """Channels (at full resolution) of the latent copies the decoder's spatial norms keep: two per norm;
    each level has (layers + 1) resnets of two norms, a quarter of the pixels of the level above; the top
    level adds the output norm, the bottom one the mid block's two resnets."""
    levels = len(sizes.vae_channels)
    total = 0.0
    for level in range(levels):
        norms = 2 * (sizes.vae_layers + 1) + (1 if level == 0 else 0) + (4 if level == levels - 1 else 0)
        total += 2 * norms * sizes.latent_channels / 4**level
    return total


def encode_activations(shape: RunShape, sizes: ModelSizes) -> dict[str, int]:
    """The clip on the device in the VAE dtype, the tiled encoder's working set, copies of its output."""
    e = shape.dtype_bytes
    height, width = shape.vae_size
    moments = 2 * sizes.latent_channels * (shape.clip_frames - 1) // 4 * shape.latent_size[0] * shape.latent_size[1] * e
    work = (ENCODE_A + ENCODE_B * sizes.vae_layers) * sizes.vae_channels[0] * vae_call_unit(shape, sizes)
    return {"clip_video": 3 * shape.clip_frames * height * width * e, "encoder_working_set": round(work),
            "encoder_outputs": MOMENTS_COPIES * moments}


def decode_activations(shape: RunShape, sizes: ModelSizes) -> dict[str, int]:
    """The decoder's working set and the decoded clip, or, when larger, the colour fix: float32 frames
    at the output size (decoded, re-read input, two AdaIN intermediates)."""
    e = shape.dtype_bytes
    height, width = shape.vae_size
    channels = (DECODE_A + DECODE_B * sizes.vae_layers) * sizes.vae_channels[0] + zq_copy_channels(sizes)
    vae = {"decoder_working_set": round(channels * vae_call_unit(shape, sizes)),
           "decoded_clip": DECODED_COPIES * 3 * shape.clip_frames * height * width * e}
    frames = shape.clip_frames * 3 * shape.output_size[0] * shape.output_size[1] * FP32
    color = {"color_fix_frames": COLOR_FIX_FRAME_TENSORS * frames if shape.color_fix else frames}
    return vae if sum(vae.values()) > sum(color.values()) else color


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
        # merge: on the host copies; group/sequential hooks have sent every group back by then
        # the last clip's new latents and x0 are still on the device
        "merge": ((denoisers if offload in ("none", "model") else 0) + acts["denoise"]["rope_tables"]
                  + 2 * acts["denoise"]["clip_tensors"] // CLIP_LATENT_TENSORS),
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
    # Weights load onto the host in the compute dtype. Group offloading with CUDA streams then makes a
    # pinned copy of each model (the transformer first), freeing the loaded one once it is copied.
    pinned = weight_bytes(sizes.transformer_params, sizes.transformer_fp8_params, weights, e) if offload == "group" else 0
    at_rest = vae + t5 + (0 if offload == "none" else denoisers)
    frames = shape.clip_frames * 3 * shape.output_size[0] * shape.output_size[1] * FP32
    clip = shape.latent_frames * sizes.latent_channels * shape.latent_size[0] * shape.latent_size[1] * e
    prompts = 2 * shape.tiles * sizes.text_length * sizes.t5_dim * e
    states = shape.clips * (3 * clip + prompts)  # control latents, latents, previous x0; prompt embeddings
    on_device_while_denoising = denoisers if offload == "model" else 0
    return {
        # read in the compute dtype; --weights fp8 casts them on the host afterwards
        "load": max(denoiser_weights(sizes, "bf16", e), denoisers + pinned) + vae + t5,
        "encode": at_rest - vae + ENCODE_FRAME_COPIES * frames + states,
        "text": at_rest + states,
        "denoise": at_rest + states,
        "merge": at_rest - on_device_while_denoising + states,
        "decode": at_rest - vae + DECODE_FRAME_COPIES * frames + states,
    }
