"""The strict loader: the reference checkpoint loads with nothing missing or unexpected, and every broken
checkpoint raises one CheckpointError line that names the file (and key, and expected shape) and says
where the official weights come from."""

from __future__ import annotations

import builtins
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from vividcli.errors import CheckpointError
from vividcli.models.layout import TRANSFORMER_ADDITIONS, CheckpointLayout
from vividcli.models.loading import load_models, read_tensor_file, read_weights_folder
from vividcli.testing.checkpoints import ensure_tiny_checkpoint

COG, VIV = "CogVideoX1.5-5B", "Vivid-VR"
SHARD_1 = f"{COG}/transformer/diffusion_pytorch_model-00001-of-00002.safetensors"
SHARD_2 = f"{COG}/transformer/diffusion_pytorch_model-00002-of-00002.safetensors"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """The session's tiny checkpoint (shared with test_factory.py): never modified, only copied."""
    return ensure_tiny_checkpoint(tmp_path_factory.getbasetemp() / "tiny-ckpts")


@pytest.fixture
def ckpt(pristine, tmp_path) -> Path:
    """A private copy of the tiny checkpoint that a test may break."""
    return Path(shutil.copytree(pristine, tmp_path / "ckpts"))


def load_error(root: Path) -> str:
    with pytest.raises(CheckpointError) as info:
        load_models(root)
    return str(info.value)


def check_message(message: str, *needles: object) -> None:
    """One line, the official Hugging Face repos, and every needle (file, key, shape)."""
    assert "\n" not in message and "\r" not in message, f"not one line: {message!r}"
    assert "\x1b" not in message, f"terminal escape codes in: {message!r}"
    assert "zai-org/CogVideoX1.5-5B" in message and "csbhr/Vivid-VR" in message, message
    for needle in needles:
        assert str(needle) in message, f"{needle!r} not in {message!r}"


def edit_pt(path: Path, edit) -> None:
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)


def edit_safetensors(path: Path, edit) -> None:
    state = load_file(path)
    edit(state)
    save_file(state, path, metadata={"format": "pt"})


# ------------------------------------------------------------------------------- good checkpoints


def _file_keys(layout: CheckpointLayout) -> dict[str, set[str]]:
    """Every key stored in each component's files (the Vivid-VR .pt keys with their module prefix)."""
    cog, viv = layout.cogvideox, layout.vividvr
    transformer = set(read_weights_folder(cog / "transformer", "diffusion_pytorch_model"))
    for prefix, name in TRANSFORMER_ADDITIONS.items():
        transformer |= {prefix + k for k in read_tensor_file(viv / name)}
    return {
        "transformer": transformer,
        "controlnet": set(read_weights_folder(viv / "controlnet", "diffusion_pytorch_model")),
        "vae": set(read_weights_folder(cog / "vae", "diffusion_pytorch_model")),
        "text_encoder": set(read_weights_folder(cog / "text_encoder", "model")),
    }


def _assert_nothing_missing_or_unexpected(root: Path) -> None:
    models = load_models(root)
    stored = _file_keys(CheckpointLayout(root))
    for name, keys in stored.items():
        expected = set(getattr(models, name).state_dict())
        if name == "text_encoder":
            expected.discard("encoder.embed_tokens.weight")  # tied to shared.weight, stored once
        assert sorted(expected - keys) == [], f"{name}: missing keys"
        assert sorted(keys - expected) == [], f"{name}: unexpected keys"


def test_reference_checkpoint_loads_with_nothing_missing_or_unexpected(reference_ckpt_dir):
    _assert_nothing_missing_or_unexpected(reference_ckpt_dir)


def test_factory_checkpoint_loads_with_nothing_missing_or_unexpected(pristine):
    _assert_nothing_missing_or_unexpected(pristine)


# -------------------------------------------------------------------------------- broken checkpoints


def test_missing_checkpoint_dir(tmp_path):
    root = tmp_path / "nowhere"
    check_message(load_error(root), root)


def test_missing_connectors_file(ckpt):
    path = ckpt / VIV / "connectors.pt"
    path.unlink()
    check_message(load_error(ckpt), path)


def test_missing_key_in_connectors(ckpt):
    path = ckpt / VIV / "connectors.pt"
    shape = list(torch.load(path, weights_only=True)["1.c_mlp.2.weight"].shape)
    edit_pt(path, lambda sd: sd.pop("1.c_mlp.2.weight"))
    message = load_error(ckpt)
    check_message(message, path, "1.c_mlp.2.weight", "missing", shape)


def test_wrong_shape_in_control_feat_proj(ckpt):
    path = ckpt / VIV / "control_feat_proj.pt"
    key = "1.spatial_res_block.conv1.weight"
    edit_pt(path, lambda sd: sd.__setitem__(key, torch.zeros(320, 320, 3, 1, dtype=torch.bfloat16)))
    check_message(load_error(ckpt), path, key, [320, 320, 3, 1], [320, 320, 3, 3])


@pytest.mark.parametrize("where", ["transformer shard", "control_patch_embed.pt", "controlnet"])
def test_unexpected_extra_key(ckpt, where):
    extra = torch.zeros(4, dtype=torch.bfloat16)
    if where == "transformer shard":
        path = ckpt / SHARD_2
        edit_safetensors(path, lambda sd: sd.__setitem__("extra_block.weight", extra))
    elif where == "controlnet":
        path = ckpt / VIV / "controlnet" / "diffusion_pytorch_model.safetensors"
        edit_safetensors(path, lambda sd: sd.__setitem__("extra_block.weight", extra))
    else:
        path = ckpt / VIV / "control_patch_embed.pt"
        edit_pt(path, lambda sd: sd.__setitem__("extra_block.weight", extra))
    check_message(load_error(ckpt), path, "extra_block.weight", "unexpected")


def test_missing_transformer_shard(ckpt):
    path = ckpt / SHARD_2
    path.unlink()
    check_message(load_error(ckpt), path)


@pytest.mark.parametrize(
    "relative",
    [SHARD_1, f"{VIV}/controlnet/diffusion_pytorch_model.safetensors", f"{COG}/vae/diffusion_pytorch_model.safetensors"],
)
def test_truncated_safetensors(ckpt, relative):
    path = ckpt / relative
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    check_message(load_error(ckpt), path)


def test_truncated_pt_file(ckpt):
    path = ckpt / VIV / "control_feat_proj.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    check_message(load_error(ckpt), path)


class _RunsCode:
    """Unpickling this object calls builtins.open(marker, "w"): code execution, visible as a new file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (builtins.open, (str(self.marker), "w"))


def _write_code_pickle(ckpt: Path, tmp_path: Path) -> tuple[Path, Path]:
    path, marker = ckpt / VIV / "connectors.pt", tmp_path / "code-ran"
    torch.save({"0.to_q.0.weight": _RunsCode(marker)}, path)
    return path, marker


def test_pickle_with_code_is_refused_without_running_it(ckpt, tmp_path):
    path, marker = _write_code_pickle(ckpt, tmp_path)
    with pytest.raises(CheckpointError) as info:
        load_models(ckpt)
    assert not marker.exists(), "weights_only loading must not execute pickled code"
    assert str(path) in str(info.value)


def test_pickle_with_code_message_is_one_line(ckpt, tmp_path):
    path, _ = _write_code_pickle(ckpt, tmp_path)
    check_message(load_error(ckpt), path)


def test_pickle_of_non_tensors_is_refused(ckpt):
    path = ckpt / VIV / "control_patch_embed.pt"
    torch.save({"proj.weight": [1.0, 2.0], "note": "not a tensor"}, path)
    check_message(load_error(ckpt), path)


def test_unreadable_transformer_config(ckpt):
    path = ckpt / COG / "transformer" / "config.json"
    path.write_text("{")
    check_message(load_error(ckpt), path)


def test_index_pointing_to_missing_shard(ckpt):
    index_path = ckpt / COG / "transformer" / "diffusion_pytorch_model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    key = next(iter(index["weight_map"]))
    index["weight_map"][key] = "diffusion_pytorch_model-00003-of-00003.safetensors"
    index_path.write_text(json.dumps(index))
    check_message(load_error(ckpt), ckpt / COG / "transformer" / "diffusion_pytorch_model-00003-of-00003.safetensors")


# ----------------------------------------- stock components (VAE, T5) go through from_pretrained


def test_vae_missing_key(ckpt):
    path = ckpt / COG / "vae" / "diffusion_pytorch_model.safetensors"
    edit_safetensors(path, lambda sd: sd.pop("decoder.conv_out.conv.weight"))
    # A missing key names the weights folder (in a sharded folder it could belong to any shard).
    check_message(load_error(ckpt), path.parent, "decoder.conv_out.conv.weight", "missing", [3, 16, 3, 3, 3])


def test_text_encoder_missing_key(ckpt):
    path = ckpt / COG / "text_encoder" / "model-00002-of-00002.safetensors"
    key = sorted(load_file(path))[0]
    edit_safetensors(path, lambda sd: sd.pop(key))
    check_message(load_error(ckpt), path.parent, key, "missing")


def test_text_encoder_unexpected_key(ckpt):
    path = ckpt / COG / "text_encoder" / "model-00002-of-00002.safetensors"
    edit_safetensors(path, lambda sd: sd.__setitem__("encoder.extra.weight", torch.zeros(3, dtype=torch.bfloat16)))
    check_message(load_error(ckpt), path, "encoder.extra.weight")


def test_missing_tokenizer_model(ckpt):
    """Without spiece.model transformers would build a special-tokens-only tokenizer, silently."""
    (ckpt / COG / "tokenizer" / "spiece.model").unlink()
    check_message(load_error(ckpt), "tokenizer/spiece.model", "is missing")


@pytest.mark.parametrize("text, needle", [
    ("{bad", "JSONDecodeError"),
    ("{}", "weight_map"),
    ('{"weight_map": ["a list"]}', "weight_map"),
])
def test_broken_weight_index(ckpt, text, needle):
    index = ckpt / COG / "transformer" / "diffusion_pytorch_model.safetensors.index.json"
    index.write_text(text)
    check_message(load_error(ckpt), index, needle)


@pytest.mark.parametrize("edit, needle", [
    (lambda c: c.update(num_layers="twelve"), "does not describe a VividVRTransformer3DModel"),
    (lambda c: [c], "is not a JSON object"),
])
def test_transformer_config_with_wrong_values(ckpt, edit, needle):
    path = ckpt / COG / "transformer" / "config.json"
    config = json.loads(path.read_text())
    edited = edit(config)
    path.write_text(json.dumps(edited if edited is not None else config))
    check_message(load_error(ckpt), path, needle)


def test_controlnet_config_that_is_not_utf8(ckpt):
    path = ckpt / VIV / "controlnet" / "config.json"
    path.write_bytes(b"\xff\xfe{")
    check_message(load_error(ckpt), path, "cannot read model config")
