"""Loading the official checkpoints, strictly.

The layout (which file lives where) is `models/layout.py`.

The transformer and ControlNet are built on the meta device and filled in one strict
`load_state_dict(assign=True)`: every key must be present exactly once with the expected shape, and
any problem is reported as one line naming the file, the key and what was expected.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from vividcli.devices import check_vivid_dtype
from vividcli.errors import CheckpointError, describe_exception
from vividcli.models.controlnet import VividVRControlNetModel
from vividcli.models.layout import HOW_TO_GET, TRANSFORMER_ADDITIONS, CheckpointLayout
from vividcli.models.offload import HOST, Placement
from vividcli.models.transformer import VividVRTransformer3DModel


def read_tensor_file(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file, or a `torch.save`d state dict loaded with `weights_only=True` (no pickled code)."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} is missing; {HOW_TO_GET}")
    try:
        if path.suffix == ".safetensors":
            return load_file(path, device="cpu")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refused a pickled object: it could run code
        raise CheckpointError(
            f"checkpoint file {path} holds pickled objects other than tensors and was not loaded "
            f"(loading it could run code: {describe_exception(exc)}); {HOW_TO_GET}"
        ) from exc
    except Exception as exc:  # truncated or foreign files surface as many exception types
        raise CheckpointError(
            f"cannot read checkpoint file {path} ({describe_exception(exc)}); {HOW_TO_GET}"
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint file {path} is not a state dict of tensors; {HOW_TO_GET}")
    return state


def read_weights_folder(folder: Path, weights_name: str) -> dict[str, tuple[torch.Tensor, Path]]:
    """All tensors of a diffusers/transformers weights folder, single file or sharded with an index."""
    single = folder / f"{weights_name}.safetensors"
    index = folder / f"{weights_name}.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            files = [folder / name for name in sorted(set(weight_map.values()))]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"cannot read weight index {index} ({describe_exception(exc)}): "
                                  f"expected a JSON object with a \"weight_map\" of key -> file; {HOW_TO_GET}") from exc
    else:
        raise CheckpointError(f"no weights in {folder}: expected {single.name} or {index.name}; {HOW_TO_GET}")
    tensors: dict[str, tuple[torch.Tensor, Path]] = {}
    for file in files:
        for key, value in read_tensor_file(file).items():
            tensors[key] = (value, file)
    return tensors


def fill_module(
    module: nn.Module,
    tensors: dict[str, tuple[torch.Tensor, Path]],
    expected_file: dict[str, Path],
    dtype: torch.dtype,
) -> None:
    """Strictly load `tensors` (key -> (tensor, source file)) into a meta-device `module`.

    `expected_file` maps every expected key to the file that should hold it (for error messages).
    """
    expected = module.state_dict()
    for key, target in expected.items():
        if key not in tensors:
            raise CheckpointError(
                f"{expected_file[key]}: missing key '{key}' (expected shape {list(target.shape)}); {HOW_TO_GET}"
            )
        value, file = tensors[key]
        if value.shape != target.shape:
            raise CheckpointError(
                f"{file}: key '{key}' has shape {list(value.shape)}, expected {list(target.shape)}; "
                f"the file does not match the model config; {HOW_TO_GET}"
            )
    for key, (_, file) in tensors.items():
        if key not in expected:
            raise CheckpointError(f"{file}: unexpected key '{key}' (not in the model); {HOW_TO_GET}")
    converted: dict[int, torch.Tensor] = {}  # tied keys share one source tensor: convert it once
    state = {k: converted.setdefault(id(v), v.to(dtype)) for k, (v, _) in tensors.items()}
    module.load_state_dict(state, strict=True, assign=True)


def _read_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or bad UTF-8
        raise CheckpointError(f"cannot read model config {path} ({describe_exception(exc)}); {HOW_TO_GET}") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"model config {path} is not a JSON object; {HOW_TO_GET}")
    return config


def _build_on_meta(model_class, config_path: Path):
    """`model_class.from_config(<config_path>)` without weights; a config it rejects is one CheckpointError."""
    config = _read_config(config_path)
    try:
        with torch.device("meta"):
            return model_class.from_config(config)
    except Exception as exc:  # wrong types or values surface as TypeError, ValueError, AssertionError, ...
        raise CheckpointError(f"model config {config_path} does not describe a {model_class.__name__} "
                              f"({describe_exception(exc)}); {HOW_TO_GET}") from exc


def load_transformer(layout: CheckpointLayout, dtype: torch.dtype, device: torch.device | str) -> VividVRTransformer3DModel:
    """CogVideoX1.5 transformer weights + the three Vivid-VR `.pt` files, strictly."""
    folder = layout.cogvideox / "transformer"
    model = _build_on_meta(VividVRTransformer3DModel, folder / "config.json")
    tensors = read_weights_folder(folder, "diffusion_pytorch_model")
    expected_file = {key: folder for key in model.state_dict()}
    for prefix, name in TRANSFORMER_ADDITIONS.items():
        path = layout.vividvr / name
        for key, value in read_tensor_file(path).items():
            tensors[prefix + key] = (value, path)
        expected_file.update({k: path for k in expected_file if k.startswith(prefix)})
    fill_module(model, tensors, expected_file, dtype)
    return model.to(device).eval().requires_grad_(False)


def load_controlnet(layout: CheckpointLayout, dtype: torch.dtype, device: torch.device | str) -> VividVRControlNetModel:
    folder = layout.vividvr / "controlnet"
    model = _build_on_meta(VividVRControlNetModel, folder / "config.json")
    tensors = read_weights_folder(folder, "diffusion_pytorch_model")
    fill_module(model, tensors, {key: folder for key in model.state_dict()}, dtype)
    return model.to(device).eval().requires_grad_(False)


def _require_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint incomplete: {folder} is missing; {HOW_TO_GET}")


def _from_pretrained(what: str, folder: Path, loader, **kwargs):
    """Run a stock `from_pretrained` (configs only), turning its failures into one CheckpointError line."""
    _require_folder(folder)
    try:
        return loader(folder, **kwargs)
    except CheckpointError:
        raise
    except Exception as exc:  # diffusers/transformers raise OSError, ValueError, RuntimeError, ...
        raise CheckpointError(f"cannot load the {what} from {folder}: {describe_exception(exc)}; {HOW_TO_GET}") from exc


def load_vae(layout: CheckpointLayout, dtype: torch.dtype, device: torch.device | str):
    """CogVideoX 3D VAE, strictly, with slicing and tiling on (tile sizes from its config, as the reference)."""
    from diffusers import AutoencoderKLCogVideoX

    folder = layout.cogvideox / "vae"
    _require_folder(folder)
    vae = _build_on_meta(AutoencoderKLCogVideoX, folder / "config.json")
    fill_module(vae, read_weights_folder(folder, "diffusion_pytorch_model"), dict.fromkeys(vae.state_dict(), folder), dtype)
    vae.enable_slicing()
    vae.enable_tiling()
    return vae.to(device).eval().requires_grad_(False)


# T5EncoderModel ties encoder.embed_tokens to shared; checkpoints may store the embedding once.
T5_TIED_KEYS = {"encoder.embed_tokens.weight": "shared.weight"}


def load_text_encoder(layout: CheckpointLayout, dtype: torch.dtype, device: torch.device | str):
    """T5 encoder, strictly. Eager attention: SDPA differs from the reference by ~1e-5, which CFG amplifies."""
    from transformers import T5Config, T5EncoderModel

    folder = layout.cogvideox / "text_encoder"
    _require_folder(folder)
    try:
        config = T5Config.from_dict(_read_config(folder / "config.json"))
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"cannot use the text encoder config in {folder}: {describe_exception(exc)}; {HOW_TO_GET}") from exc
    with torch.device("meta"):
        model = T5EncoderModel._from_config(config, attn_implementation="eager")
    tensors = read_weights_folder(folder, "model")
    for tied, source in T5_TIED_KEYS.items():
        if tied not in tensors and source in tensors:
            tensors[tied] = tensors[source]
    fill_module(model, tensors, dict.fromkeys(model.state_dict(), folder), dtype)
    return model.to(device).eval().requires_grad_(False)


def load_tokenizer(layout: CheckpointLayout):
    from transformers import AutoTokenizer

    return _from_pretrained("tokenizer", layout.cogvideox / "tokenizer", AutoTokenizer.from_pretrained)


def load_scheduler(layout: CheckpointLayout):
    """The checkpoint's scheduler config in `CogVideoXDPMScheduler` (the DPM-solver Vivid-VR samples with)."""
    from diffusers import CogVideoXDPMScheduler

    return _from_pretrained("scheduler", layout.cogvideox / "scheduler", CogVideoXDPMScheduler.from_pretrained)


@dataclass
class VividVRModels:
    """Every component of a Vivid-VR restoration, loaded and placed."""

    transformer: VividVRTransformer3DModel
    controlnet: VividVRControlNetModel
    vae: nn.Module
    text_encoder: nn.Module
    tokenizer: object
    scheduler: object
    dtype: torch.dtype
    device: torch.device  # where the models compute
    placement: Placement  # where they live meanwhile (models/offload.py)


def load_models(ckpt_dir: Path | str, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                offload: str = "none", weights: str = "bf16", ff_chunks: int = 1) -> VividVRModels:
    """Load and check everything in the official layout; the first problem raises a one-line CheckpointError.

    `dtype` is bfloat16 or float32 (float16 overflows in T5 and the transformer: a UsageError). Weights
    are read in `dtype` onto the host; `offload` (none, model, group, sequential) says how the
    denoising models are placed on `device`; T5 and the VAE come to it only for their stages. `weights`
    "fp8" stores the denoising models' weights as float8; `ff_chunks` > 1 runs their blocks' feed-forward
    and rotary embedding in that many token slices (models/offload.py, models/chunking.py)."""
    check_vivid_dtype(str(dtype).removeprefix("torch."))
    layout = CheckpointLayout(Path(ckpt_dir))
    layout.check()
    transformer = load_transformer(layout, dtype, HOST)
    controlnet = load_controlnet(layout, dtype, HOST)
    return VividVRModels(
        transformer=transformer,
        controlnet=controlnet,
        vae=load_vae(layout, dtype, HOST),
        text_encoder=load_text_encoder(layout, dtype, HOST),
        tokenizer=load_tokenizer(layout),
        scheduler=load_scheduler(layout),
        dtype=dtype,
        device=torch.device(device),
        placement=Placement((transformer, controlnet), device, offload, weights, ff_chunks),
    )
