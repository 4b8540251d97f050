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
# Denoising peak, inside the rotary embedding of the first DiT block (query/key of the video tokens; the
# embedded tokens are freed after it): alive are the ControlNet's states (one per ControlNet block),
# TEXT_VIDEO_TENSORS of [B, text + video, hidden] (the embedded tokens, which hold the block's input, the
# attention input, value, normalised query and key), VIDEO_TENSORS of [B, video, hidden] (norm output,
# rotated half) and ROTARY_FP32 float32 copies of the query.
TEXT_VIDEO_TENSORS = 5
VIDEO_TENSORS = 2
ROTARY_FP32 = 3
# Clip-sized tensors on the device while one clip is denoised: its latents and control latents and the
# three blending sums (latents, x0, weights) of `denoise_clip_step`.
CLIP_LATENT_TENSORS = 5
# VAE encoder working set, in [frames of one call, first channel count, tile] tensors (the encoder reads
# 8+1 frames per call): A + B x layers per block, fitted on the simulated full CogVideoX VAE (3 layers:
# 6.59) and the tiny test VAE (1 layer: 4.71).
ENCODE_A, ENCODE_B = 3.77, 0.94
# Copies of the encoder's output (moments) alive at the encode peak: the tile rows, their blend, the
# concatenation, the posterior's std, var and sample, the scaled and padded latents.
MOMENTS_COPIES = 7
# VAE decoder working set of one call on one tile, in channels of [9 frames, tile] tensors:
# (A + B x layers per block) x the first channel count + ZQ x the spatial norms' latent copies
# (`zq_copy_channels`). Two regimes: a clip of <= 3 latents decodes a tile in one call ("first"); a
# longer one in calls of 2 latents, each holding the previous call's conv caches while it makes its own
# ("steady": about 1.3-1.5x more; its peak is the same in every later call). Fitted on the simulated full
# CogVideoX VAE (3 layers: 1909.6 and 2543.3 channels) and the tiny test VAE (1 layer: 344.9, 517.3).
DECODE_FIRST = (7.215, 1.594, 1)
DECODE_STEADY = (3.237, 3.597, 2)
# Decode with the colour fix: besides the clip's decoded float32 frames, three tensors of the frames it
# keeps (the re-read input on the device and two AdaIN intermediates: subtract, divide), output size.
COLOR_FIX_KEPT_TENSORS = 3
# Host frames of one clip at the output size, float32: while encoding, the decoded frames, their stack,
# the [F, C, H, W] copy and the VAE input; while decoding, the frames a clip keeps (output) and, with the
# colour fix, the re-read input of those frames.
ENCODE_FRAME_COPIES = 4


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


def denoise_activations(shape: RunShape, sizes: ModelSizes, ff_chunks: int = 1) -> dict[str, int]:
    """Activation terms of one tile's ControlNet + transformer call (batch `cfg_batch`); `ff_chunks` > 1:
    the blocks run in that many token slices (models/chunking.py, `chunked_block_peak`)."""
    e, b, d = shape.dtype_bytes, shape.cfg_batch, sizes.hidden
    n = shape.video_tokens(sizes)
    video, text_video = b * n * d * e, b * (n + sizes.text_length) * d * e
    states = sizes.controlnet_layers * video if shape.controlnet_on else 0
    tile = shape.latent_frames * sizes.latent_channels * shape.tile_latent[0] * shape.tile_latent[1] * e
    clip = shape.latent_frames * sizes.latent_channels * shape.latent_size[0] * shape.latent_size[1] * e
    common = {"rope_tables": 2 * n * sizes.head_dim * FP32, "tile_inputs": 2 * b * tile,
              "clip_tensors": CLIP_LATENT_TENSORS * clip}
    if ff_chunks > 1:
        return {"controlnet_states": states, **chunked_block_peak(shape, sizes, ff_chunks), **common}
    return {"controlnet_states": states, "text_video_tensors": TEXT_VIDEO_TENSORS * text_video,
            "video_tensors": VIDEO_TENSORS * video, "rotary_fp32": ROTARY_FP32 * b * n * d * FP32, **common}


def chunked_block_peak(shape: RunShape, sizes: ModelSizes, chunks: int) -> dict[str, int]:
    """The largest moment of the first DiT block run in `chunks` token slices (its input, the embedded
    [text | video] tokens, is alive only there), as terms. Each moment holds the embedded tokens and:
    the rotary embedding the attention-input norm (video), query, key and value and, for one slice of the
    query, its rotated half and ROTARY_FP32 float32 copies; the
    attention that norm, query, key, value and the attention output; the feed-forward the block's
    running tokens (video), its input, its output and, for one slice, the hidden layer's two tensors."""
    e, b, d = shape.dtype_bytes, shape.cfg_batch, sizes.hidden
    n = shape.video_tokens(sizes)
    length = n + sizes.text_length
    video, text_video = b * n * d * e, b * length * d * e
    video_slice, token_slice = -(-n // chunks), -(-length // chunks)
    moments = {
        "rotary": {"text_video_tensors": 4 * text_video, "video_tensors": video,
                   "rotary_slice": b * video_slice * d * (ROTARY_FP32 * FP32 + e)},
        "attention": {"text_video_tensors": 5 * text_video, "video_tensors": video},
        "feed_forward": {"text_video_tensors": 3 * text_video, "video_tensors": video,
                         "ff_hidden_slice": 2 * b * token_slice * sizes.ff_mult * d * e},
    }
    return max(moments.values(), key=lambda terms: sum(terms.values()))


def vae_call_unit(shape: RunShape, sizes: ModelSizes) -> int:
    """Bytes per channel of one VAE encoder call: the frames of one call on one tile."""
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


def vae_latent_frames(shape: RunShape) -> int:
    """Latent frames the VAE decodes per clip (the transformer's padding latent dropped)."""
    return (shape.clip_frames - 1) // 4 + 1


def decode_tiles(shape: RunShape, sizes: ModelSizes) -> list[tuple[int, int]]:
    """The (height, width) in pixels of the tiles diffusers' tiled decoding decodes, in order (one tile
    when the latents fit in one): latent tiles of vae_tile / 8 every 5/6 (height) and 4/5 (width) of one."""
    latent_h, latent_w = shape.latent_size
    tile_h, tile_w = sizes.vae_tile[0] // 8, sizes.vae_tile[1] // 8
    if latent_h <= tile_h and latent_w <= tile_w:
        return [(8 * latent_h, 8 * latent_w)]
    stride_h, stride_w = int(tile_h * (1 - 1 / 6)), int(tile_w * (1 - 1 / 5))
    return [(8 * min(tile_h, latent_h - i), 8 * min(tile_w, latent_w - j))
            for i in range(0, latent_h, stride_h) for j in range(0, latent_w, stride_w)]


def decoder_peak(shape: RunShape, sizes: ModelSizes) -> dict[str, int]:
    """The tiled VAE decoder's peak: one tile's working set plus the decoded tiles before it (each kept
    whole until the blend), or, when larger, the end of the tiling (every tile, the blended rows, their
    concatenation)."""
    e = shape.dtype_bytes
    a, b, zq = DECODE_STEADY if vae_latent_frames(shape) // 2 > 1 else DECODE_FIRST
    channels = (a + b * sizes.vae_layers) * sizes.vae_channels[0] + zq * zq_copy_channels(sizes)
    call_frames = min(shape.clip_frames, sizes.vae_frame_batch + 1)
    clip_frames = 3 * shape.clip_frames * e  # bytes per pixel of a decoded tile (all frames)
    best, before = (0, 0), 0
    for height, width in decode_tiles(shape, sizes):
        work = round(channels * call_frames * height * width * e)
        best = max(best, (work, before), key=sum)
        before += clip_frames * height * width
    clip = clip_frames * shape.vae_size[0] * shape.vae_size[1]
    return {"decoder_working_set": best[0], "decoded_tiles": best[1]} if sum(best) > before + 2 * clip else \
        {"decoded_tiles": before, "decoded_clip": 2 * clip}


def decode_activations(shape: RunShape, sizes: ModelSizes) -> dict[str, int]:
    """The largest of: the VAE decoder (with the clip's latents on the device), the conversion of the decoded
    clip to float32 frames at the output size (resized, clamped and converted copies), and the colour fix
    (those frames, the re-read input and two AdaIN intermediates of the frames the clip keeps)."""
    e = shape.dtype_bytes
    pixels = 3 * shape.output_size[0] * shape.output_size[1]
    latents = vae_latent_frames(shape) * sizes.latent_channels * shape.latent_size[0] * shape.latent_size[1] * e
    decoder = {"decode_latents": latents, **decoder_peak(shape, sizes)}
    convert = {"decoded_frames": shape.clip_frames * pixels * (2 * e + FP32)}
    kept = COLOR_FIX_KEPT_TENSORS * shape.kept_frames if shape.color_fix else 0
    color = {"color_fix_frames": (shape.clip_frames + kept) * pixels * FP32}
    return max((decoder, convert, color), key=lambda terms: sum(terms.values()))


def t5_activations(shape: RunShape, sizes: ModelSizes) -> dict[str, int]:
    """One batch of prompts (one per tile) through T5 with eager attention (float32 softmax)."""
    e, length, prompts = shape.dtype_bytes, sizes.text_length, shape.tiles
    scores = prompts * sizes.t5_heads * length * length * (e + FP32)
    hidden = prompts * length * (2 * sizes.t5_ff + 4 * sizes.t5_dim) * e
    return {"t5_scores": scores, "t5_hidden": hidden}


def device_memory(shape: RunShape, sizes: ModelSizes, offload: str, weights: str,
                  ff_chunks: int = 1) -> tuple[dict, dict]:
    """(stage -> peak device bytes, term -> bytes) for `offload`, `weights` and `ff_chunks` token slices."""
    e = shape.dtype_bytes
    denoisers = denoiser_weights(sizes, weights, e)
    resident = denoisers if offload == "none" else 0  # outside the denoising stage
    in_denoise = denoisers if offload in ("none", "model") else streamed_weights(sizes, offload, weights, e)
    vae, t5 = sizes.vae_params * e, sizes.t5_params * e
    acts = {"encode": encode_activations(shape, sizes), "text": t5_activations(shape, sizes),
            "denoise": denoise_activations(shape, sizes, ff_chunks), "decode": decode_activations(shape, sizes)}
    device = {
        "load": resident,
        "encode": resident + vae + sum(acts["encode"].values()),
        "text": resident + t5 + sum(acts["text"].values()),
        "denoise": in_denoise + sum(acts["denoise"].values()),
        # merge: on the host copies (every clip's new latents and x0 went back to the host); group/sequential
        # hooks have sent every group back by then; the cached RoPE tables stay on the device
        "merge": (denoisers if offload in ("none", "model") else 0) + acts["denoise"]["rope_tables"],
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
    kept = shape.kept_frames * 3 * shape.output_size[0] * shape.output_size[1] * FP32
    prompts = 2 * shape.tiles * sizes.text_length * sizes.t5_dim * e
    # every clip's state: control latents and initial noise (encode); the prompt embeddings and the solver's
    # previous x0 (text to merge); the latents and previous x0 (decode: the conditioning is dropped)
    encoded, states, decoding = shape.clips * 2 * clip, shape.clips * (3 * clip + prompts), shape.clips * 2 * clip
    on_device_while_denoising = denoisers if offload == "model" else 0
    return {
        # read in the compute dtype; --weights fp8 casts them on the host afterwards
        "load": max(denoiser_weights(sizes, "bf16", e), denoisers + pinned) + vae + t5,
        # the VAE comes back to the host at the end of its stages, when the frames are gone
        "encode": at_rest + encoded + max(ENCODE_FRAME_COPIES * frames - vae, 0),
        "text": at_rest + states,
        "denoise": at_rest + states,
        "merge": at_rest - on_device_while_denoising + states,
        "decode": at_rest + decoding + max((2 if shape.color_fix else 1) * kept - vae, 0),
    }
