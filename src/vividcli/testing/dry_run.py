"""The dry run itself: Vivid-VR models on a simulated GPU, one denoising step of the real pipeline.

    result = run_dry(DryRunSpec(frames=121, height=1024, width=1820, offload="none"))
    result["per_stage"]["denoise"]   # peak bytes on the fake cuda device while denoising

Full size: the official CogVideoX1.5-5B transformer (`testing.configs`), the 6-block ControlNet, the
CogVideoX VAE with the 1.5 scaling values, the T5-v1.1-XXL encoder. Tiny (`tiny=True`): the sizes of
`testing.checkpoints.TinySpec`, what the test suite runs in seconds. Weights are fake: nothing is
downloaded or read. The tokenizer is a stand-in that gives every prompt its 226 token ids (T5's
cost depends only on the length). Simulation details: `vividcli.testing.fake_gpu`.
"""

from __future__ import annotations

import dataclasses
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from itertools import pairwise
from types import SimpleNamespace

import numpy as np
import torch
from diffusers import AutoencoderKLCogVideoX, CogVideoXDPMScheduler
from transformers import T5Config, T5EncoderModel

from vividcli.config import RestoreOptions
from vividcli.media.reader import ArraySource
from vividcli.models.controlnet import VividVRControlNetModel
from vividcli.models.loading import VividVRModels
from vividcli.models.transformer import VividVRTransformer3DModel
from vividcli.pipeline import restore_frames
from vividcli.planning.plan import plan_restoration
from vividcli.planning.sizes import ModelSizes
from vividcli.testing.checkpoints import TinySpec, controlnet_config, text_encoder_config, transformer_config, vae_config
from vividcli.testing.configs import (
    COGVIDEOX_TRANSFORMER,
    COGVIDEOX_VAE,
    SCHEDULER_CONFIG,
    T5_XXL_ENCODER,
    VIVIDVR_CONTROLNET_LAYERS,
    model_kwargs,
)
from vividcli.testing.fake_gpu import (
    DatalessOps,
    FlashAttention,
    LiveBytes,
    StageProgress,
    dry_run_patches,
    fake_mode,
    forget_constants,
    fresh_caches,
)

DEVICE = torch.device("cuda")
HOST = torch.device("cpu")
TINY_VOCAB = 260


@dataclass(frozen=True)
class DryRunSpec:
    """One simulated run: input size, restore options that change memory, offload mode and weight format."""

    frames: int = 121
    height: int = 1024
    width: int = 1820
    offload: str = "none"
    weights: str = "bf16"
    sequential_cfg: bool = False  # CFG halves one after another at batch 1
    ff_chunks: int = 1  # token slices of the blocks' feed-forward and rotary embedding (models/chunking.py)
    color_fix: str = "adain"
    upscale: float = 0.0
    tile_size: int = 128
    clip_frames: int = 121
    tiny: bool = False


@dataclass(frozen=True)
class ModelConfigs:
    transformer: dict
    controlnet_layers: int
    vae: dict
    text_encoder: dict


def full_configs() -> ModelConfigs:
    return ModelConfigs(model_kwargs(COGVIDEOX_TRANSFORMER), VIVIDVR_CONTROLNET_LAYERS, dict(COGVIDEOX_VAE),
                        dict(T5_XXL_ENCODER))


def tiny_configs(spec: TinySpec = TinySpec()) -> ModelConfigs:
    return ModelConfigs(model_kwargs(transformer_config(spec)), model_kwargs(controlnet_config(spec))["num_layers"],
                        model_kwargs(vae_config(spec)), text_encoder_config(spec, TINY_VOCAB))


class StubTokenizer:
    """T5 tokenizer stand-in: `max_length` padding gives that many ids per prompt, `longest` one."""

    def __call__(self, prompts, padding="longest", max_length=None, **kwargs):
        length = max_length if padding == "max_length" else 1
        return SimpleNamespace(input_ids=torch.zeros(len(prompts), length, dtype=torch.long))


def build_networks(configs: ModelConfigs, device: torch.device) -> dict[str, torch.nn.Module]:
    """The four networks with fake weights in bfloat16 on `device` (call inside FakeTensorMode)."""
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            transformer = VividVRTransformer3DModel(**configs.transformer)
            controlnet = VividVRControlNetModel.from_transformer_config(transformer.config, configs.controlnet_layers)
            vae = AutoencoderKLCogVideoX(**configs.vae)
            t5 = T5EncoderModel._from_config(T5Config(**configs.text_encoder), attn_implementation="eager",
                                             dtype=torch.bfloat16)
    finally:
        torch.set_default_dtype(default_dtype)
    vae.enable_slicing()
    vae.enable_tiling()  # as models.loading.load_vae
    nets = {"transformer": transformer, "controlnet": controlnet, "vae": vae, "text_encoder": t5}
    for net in nets.values():
        forget_constants(net)
    return {name: net.eval().requires_grad_(False) for name, net in nets.items()}


def make_models(nets: dict[str, torch.nn.Module], spec: DryRunSpec) -> VividVRModels:
    """`VividVRModels` as `load_models` makes them: weights on the host, placed by the offload mode."""
    scheduler = CogVideoXDPMScheduler.from_config(model_kwargs(SCHEDULER_CONFIG))
    extra = {}
    if weights_live_on_host():
        from vividcli.models.offload import Placement

        extra["placement"] = Placement((nets["transformer"], nets["controlnet"]), DEVICE, spec.offload, spec.weights,
                                       ff_chunks=spec.ff_chunks)
    elif (spec.offload, spec.weights, spec.ff_chunks) != ("none", "bf16", 1):
        raise NotImplementedError("this tree has no offload modes or fp8 weights (models/offload.py)")
    return VividVRModels(tokenizer=StubTokenizer(), scheduler=scheduler, dtype=torch.bfloat16, device=DEVICE,
                         **nets, **extra)


def mark_text_stage(models: VividVRModels, tracker: LiveBytes) -> None:
    """The tracker is in stage `text` while T5 is on the device (moved in, prompts, moved out)."""
    place = models.placement.stage

    @contextmanager
    def stage(module):
        previous = tracker.stage
        if module is models.text_encoder:
            tracker.set_stage("text")
        try:
            with place(module) as placed:
                yield placed
        finally:
            tracker.set_stage(previous)

    models.placement.stage = stage  # this instance only


def weights_live_on_host() -> bool:
    """Whether `load_models` reads weights onto the host and lets the placement move them (offload modes)."""
    return "placement" in {f.name for f in dataclasses.fields(VividVRModels)}


def run_dry(spec: DryRunSpec) -> dict:
    """Simulate one restoration (one denoising step) and return the peaks per device and stage."""
    configs = tiny_configs() if spec.tiny else full_configs()
    options = RestoreOptions(upscale=spec.upscale, tile_size=spec.tile_size, clip_frames=spec.clip_frames, steps=1,
                             sequential_cfg=spec.sequential_cfg, color_fix=spec.color_fix)
    plan = plan_restoration(spec.frames, spec.height, spec.width, options)
    tracker = LiveBytes()
    with ExitStack() as stack:
        for context in (fresh_caches(), fake_mode()):
            stack.enter_context(context)
        nets = build_networks(configs, HOST if weights_live_on_host() else DEVICE)
        for net in nets.values():
            tracker.register_module(net)
        for context in (dry_run_patches(tracker), FlashAttention(), DatalessOps(), tracker):
            stack.enter_context(context)
        models = make_models(nets, spec)  # in the tracker: the placement's copies to the device count
        if weights_live_on_host():
            mark_text_stage(models, tracker)
        frame = np.broadcast_to(np.zeros((), np.float32), (spec.height, spec.width, 3))
        source = ArraySource([frame] * spec.frames)
        captions = [[""] * len(plan.tiles) for _ in plan.clips]
        for _ in restore_frames(models, source, captions, options, progress=StageProgress(tracker)):
            pass
    return report(spec, plan, tracker, nets)


def report(spec: DryRunSpec, plan, tracker: LiveBytes, nets: dict[str, torch.nn.Module]) -> dict:
    device, host = tracker.peaks["cuda"], tracker.peaks["cpu"]
    stages = [s for s in ("load", "encode", "text", "denoise", "merge", "decode") if s in device]
    return {
        "what": "Vivid-VR restoration on a simulated GPU, one denoising step (vividcli.testing.dry_run)",
        "config": "tiny" if spec.tiny else "CogVideoX1.5-5B + 6-block ControlNet + CogVideoX VAE + T5-v1.1-XXL",
        "offload": spec.offload, "weights": spec.weights, "compute_dtype": "bfloat16",
        "cfg_batch": 1 if spec.sequential_cfg else 2, "ff_chunks": max(spec.ff_chunks, 1),
        "frames": spec.frames, "input_size": [spec.height, spec.width], "output_size": list(plan.output_size),
        "tile_size": spec.tile_size, "clip_frames": spec.clip_frames, "color_fix": spec.color_fix,
        "clips": len(plan.clips), "tiles": len(plan.tiles),
        "params": {name: sum(p.numel() for p in net.parameters()) for name, net in nets.items()},
        "peak_device_bytes": max(device.values()), "peak_host_bytes": max(host.values()),
        "per_stage": {s: device[s] for s in stages}, "per_stage_host": {s: host[s] for s in stages},
    }



def model_sizes(configs: ModelConfigs) -> ModelSizes:
    """`ModelSizes` counted on the networks built from `configs` (on the meta device: no memory)."""
    with torch.device("meta"):
        nets = build_networks(configs, torch.device("meta"))
    transformer, controlnet, vae, t5 = (nets[k] for k in ("transformer", "controlnet", "vae", "text_encoder"))
    cfg, t5_cfg = transformer.config, t5.config
    fp8 = {name: fp8_params(nets[name]) for name in ("transformer", "controlnet")}
    encode, decode = vae_flops_per_voxel(vae)
    ff = transformer.transformer_blocks[0].ff.net[2]
    return ModelSizes(
        heads=cfg.num_attention_heads, head_dim=cfg.attention_head_dim, layers=cfg.num_layers,
        controlnet_layers=controlnet.config.num_layers, text_length=cfg.max_text_seq_length, patch=cfg.patch_size,
        patch_t=cfg.patch_size_t, latent_channels=cfg.in_channels,
        ff_mult=ff.in_features // ff.out_features, connector_width=transformer.connectors[0].to_q[0].out_features,
        projector_width=transformer.control_feat_proj[0].spatial_res_block.conv1.out_channels,
        transformer_params=count(transformer), controlnet_params=count(controlnet),
        block_params=count(transformer.transformer_blocks[0]), connector_params=count(transformer.connectors[0]),
        largest_layer_params=max(count(m) for m in transformer.modules() if not list(m.children())),
        top_level_params=count(transformer) - sum(count(m) for m in transformer.children()
                                                  if isinstance(m, torch.nn.ModuleList)),
        projector_pair_params=max(map(sum, pairwise(count(b) for b in transformer.control_feat_proj))),
        transformer_fp8_params=fp8["transformer"], controlnet_fp8_params=fp8["controlnet"],
        block_fp8_params=count_fp8(transformer.transformer_blocks[0]), connector_fp8_params=count_fp8(transformer.connectors[0]),
        t5_params=count(t5), t5_dim=t5_cfg.d_model, t5_heads=t5_cfg.num_heads, t5_kv=t5_cfg.d_kv,
        t5_ff=t5_cfg.d_ff, t5_layers=t5_cfg.num_layers, vae_params=count(vae),
        vae_channels=tuple(vae.config.block_out_channels), vae_layers=vae.config.layers_per_block,
        vae_tile=(vae.tile_sample_min_height, vae.tile_sample_min_width),
        vae_frame_batch=vae.num_sample_frames_batch_size, vae_encode_flops_per_voxel=encode,
        vae_decode_flops_per_voxel=decode)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def fp8_params(module: torch.nn.Module) -> int:
    """Parameters diffusers' layerwise casting stores as float8 (what `--weights fp8` does); the module
    keeps the casting on."""
    module.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    return count_fp8(module)


def count_fp8(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.dtype == torch.float8_e4m3fn)


def vae_flops_per_voxel(vae: torch.nn.Module, frames: int = 9, size: int = 64) -> tuple[float, float]:
    """(encode, decode) FLOPs per frame pixel of the VAE, counted by torch on a small input (meta device)."""
    from torch.utils.flop_counter import FlopCounterMode

    vae.disable_tiling()
    voxels = frames * size * size
    with torch.device("meta"), torch.no_grad():
        video = torch.zeros(1, 3, frames, size, size, dtype=torch.bfloat16)
        with FlopCounterMode(display=False) as encode:
            latents = vae.encode(video).latent_dist.mode()
        with FlopCounterMode(display=False) as decode:
            vae.decode(latents)
    return encode.get_total_flops() / voxels, decode.get_total_flops() / voxels
