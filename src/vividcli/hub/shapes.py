"""Keys and shapes of the checkpoint against the model classes, built on the meta device from the
checkpoint's own config.json (the last part of `verify`; torch and the models are imported only here,
and only when a check runs).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from vividcli.errors import describe_exception
from vividcli.hub.problems import MAX_KEY_PROBLEMS, Problem, TensorIndex
from vividcli.hub.registry import COGVIDEOX, VIVIDVR, read_json
from vividcli.models.layout import DIFFUSERS_WEIGHTS, TRANSFORMER_ADDITIONS


def check_models(root: Path, found: dict[str, TensorIndex]) -> list[Problem]:
    problems: list[Problem] = []
    cog, viv = COGVIDEOX.path(root), VIVIDVR.path(root)
    if "cogvideox/transformer" in found:
        problems += _check_transformer(cog / "transformer", found["cogvideox/transformer"], viv,
                                       found.get("vividvr/pt"))
    for key, kind, folder in (("vividvr/controlnet", "controlnet", viv / "controlnet"),
                              ("cogvideox/vae", "vae", cog / "vae"),
                              ("cogvideox/text_encoder", "text_encoder", cog / "text_encoder")):
        if key in found:
            problems += _check_against_model(kind, folder, found[key])
    return problems


@contextlib.contextmanager
def _quiet_libraries():
    """Silence diffusers/transformers info and warning logs while models are built (restored after)."""
    loggers = [logging.getLogger(n) for n in ("diffusers", "transformers")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _meta_model(kind: str, folder: Path):
    """The model class for `kind`, built on the meta device from `folder/config.json`."""
    import torch

    config = read_json(folder / "config.json")
    with _quiet_libraries(), torch.device("meta"):
        if kind == "transformer":
            from vividcli.models.transformer import VividVRTransformer3DModel

            return VividVRTransformer3DModel.from_config(config)
        if kind == "controlnet":
            from vividcli.models.controlnet import VividVRControlNetModel

            return VividVRControlNetModel.from_config(config)
        if kind == "vae":
            from diffusers import AutoencoderKLCogVideoX

            return AutoencoderKLCogVideoX.from_config(config)
        from transformers import T5Config, T5EncoderModel

        return T5EncoderModel._from_config(T5Config.from_dict(config), attn_implementation="eager")


def _expected_shapes(kind: str, folder: Path) -> tuple[dict[str, tuple[int, ...]] | None, list[Problem]]:
    config = folder / "config.json"
    if not config.is_file():
        return None, []  # reported as missing
    try:
        read_json(config)
    except Exception:
        return None, []  # reported by the JSON check
    try:
        model = _meta_model(kind, folder)
    except Exception as exc:
        return None, [Problem(config, f"cannot build the {kind} from this config ({describe_exception(exc)})")]
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}, []


def _compare(expected: dict[str, tuple[int, ...]], actual: dict[str, tuple[tuple[int, ...], Path]],
             home: dict[str, Path], config: Path) -> list[Problem]:
    """Missing / wrong-shape / unexpected keys, at most MAX_KEY_PROBLEMS lines per file and kind."""
    groups: dict[tuple[Path, str], list[Problem]] = {}
    prefixes = tensor_file_prefixes()

    def in_file(key: str, file: Path) -> str:
        """The key as the file spells it (.pt files hold keys relative to their module)."""
        prefix = prefixes.get(file.name, "") if file.suffix == ".pt" else ""
        return key[len(prefix):] if prefix and key.startswith(prefix) else key

    def add(file: Path, kind: str, problem: Problem) -> None:
        groups.setdefault((file, kind), []).append(problem)

    for key, shape in expected.items():
        if key not in actual:
            add(home[key], "missing", Problem(home[key], f"missing (the model expects shape {list(shape)})",
                                              in_file(key, home[key])))
        elif actual[key][0] != shape:
            got, file = actual[key]
            add(file, "shape", Problem(file, f"has shape {list(got)}, the model expects {list(shape)} "
                                             f"(built from {config})", in_file(key, file)))
    for key, (_, file) in actual.items():
        if key not in expected:
            add(file, "unexpected", Problem(file, "unexpected key (not in the model)", in_file(key, file)))
    problems = []
    for (file, kind), items in groups.items():
        problems += items[:MAX_KEY_PROBLEMS]
        if len(items) > MAX_KEY_PROBLEMS:
            label = {"missing": "missing keys", "shape": "keys with a wrong shape",
                     "unexpected": "unexpected keys"}[kind]
            problems.append(Problem(file, f"... and {len(items) - MAX_KEY_PROBLEMS} more {label}"))
    return problems


def _weights_home(folder: Path, name: str) -> Path:
    index = folder / f"{name}.safetensors.index.json"
    return index if index.is_file() else folder / f"{name}.safetensors"


def tensor_file_prefixes() -> dict[str, str]:
    return {name: prefix for prefix, name in TRANSFORMER_ADDITIONS.items()}


def _check_transformer(folder: Path, base: TensorIndex, vivid: Path, additions: TensorIndex | None) -> list[Problem]:
    """CogVideoX shards + the Vivid-VR .pt files against one meta `VividVRTransformer3DModel`.

    As the loader: shard tensors first, the .pt files fill (and win for) their prefixes. Parts whose files
    are missing or unreadable are left out (those files are reported already).
    """
    expected_all, problems = _expected_shapes("transformer", folder)
    if expected_all is None:
        return problems
    backbone_home = _weights_home(folder, DIFFUSERS_WEIGHTS)

    def home(key: str) -> Path:
        prefix = next((p for p in TRANSFORMER_ADDITIONS if key.startswith(p)), None)
        return vivid / TRANSFORMER_ADDITIONS[prefix] if prefix else backbone_home

    usable = set()
    if not base.broken:
        usable.add(backbone_home)
    if additions is not None:
        usable |= {vivid / n for n in TRANSFORMER_ADDITIONS.values()} - additions.broken
    actual = dict(base.shapes) if not base.broken else {}
    if additions is not None:
        actual.update(additions.shapes)
    expected = {k: v for k, v in expected_all.items() if home(k) in usable}
    actual = {k: v for k, v in actual.items() if home(k) in usable}
    homes = {k: home(k) for k in expected}
    return problems + _compare(expected, actual, homes, folder / "config.json")


def _check_against_model(kind: str, folder: Path, found: TensorIndex) -> list[Problem]:
    if found.broken:
        return []  # unreadable or missing files are reported already; key lists would only repeat that
    expected, problems = _expected_shapes(kind, folder)
    if expected is None:
        return problems
    actual = dict(found.shapes)
    if kind == "text_encoder":
        from vividcli.models.loading import T5_TIED_KEYS

        for tied, source in T5_TIED_KEYS.items():
            if tied not in actual and source in actual:
                actual[tied] = actual[source]
    name = "model" if kind == "text_encoder" else DIFFUSERS_WEIGHTS
    home = dict.fromkeys(expected, _weights_home(folder, name))
    return problems + _compare(expected, actual, home, folder / "config.json")
