"""`vividvr models download | verify | list | path` on the tiny reference checkpoint (official layout).

Nothing here touches the network: HF_HUB_OFFLINE=1 is set for every test, and the tests of the online
paths replace `huggingface_hub.snapshot_download` or point the Real-ESRGAN download at a file:// URL.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import io
import json
import os
import shutil
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from vividcli import hub
from vividcli.commands.models import models_app

COG, VIV = "CogVideoX1.5-5B", "Vivid-VR"
SHARD_2 = f"{COG}/transformer/diffusion_pytorch_model-00002-of-00002.safetensors"
INDEX = f"{COG}/transformer/diffusion_pytorch_model.safetensors.index.json"

app = typer.Typer()


@app.callback()
def _root() -> None:
    """A stand-in for the main app: only the models group is mounted."""


app.add_typer(models_app, name="models")
runner = CliRunner()


def run(*args: str | Path):
    result = runner.invoke(app, ["models", *map(str, args)])
    assert "Traceback" not in result.output, result.output
    return result


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No network, no checkpoint folder from the environment, a private Hugging Face home."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(hub.CKPT_ENV, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


class NotATensor:
    """A pickled object that `weights_only=True` must refuse."""


def _link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@pytest.fixture(scope="module")
def pristine(reference_ckpt_dir, tmp_path_factory) -> Path:
    """One writable copy of the reference checkpoint per module (the shared fixture is read-only)."""
    root = Path(shutil.copytree(reference_ckpt_dir, tmp_path_factory.mktemp("models") / "ckpts"))
    for d, _, names in os.walk(root):
        os.chmod(d, 0o755)
        for n in names:
            os.chmod(Path(d, n), 0o644)
    return root


@pytest.fixture
def ckpt(pristine, tmp_path) -> Path:
    """A per-test view of `pristine` made of hard links: break files only through `replace`."""
    return Path(shutil.copytree(pristine, tmp_path / "ckpts", copy_function=_link_or_copy))


def replace(path: Path, data: bytes) -> None:
    """Write a new file in place of `path` (never through the hard link into `pristine`)."""
    path.unlink()
    path.write_bytes(data)


def edit_pt(path: Path, edit) -> None:
    import torch

    state = torch.load(path, weights_only=True)
    edit(state)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    replace(path, buffer.getvalue())


def problem_lines(result) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.strip()]


def assert_one_problem_naming(result, file: Path, *needles: str) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in problem_lines(result) if line.startswith(f"{file}:")]
    assert lines, f"no problem names {file}:\n{result.stdout}"
    assert all(n in lines[0] for n in needles), lines[0]
    return lines[0]


# ------------------------------------------------------------------------------------------- verify

def test_verify_passes_on_the_reference_checkpoint(reference_ckpt_dir):
    result = run("verify", "--ckpt-dir", reference_ckpt_dir)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "ok"
    assert hub.verify(reference_ckpt_dir) == []


def test_verify_detects_a_truncated_safetensors_shard(ckpt):
    shard = ckpt / SHARD_2
    data = shard.read_bytes()
    replace(shard, data[: len(data) - 1000])
    line = assert_one_problem_naming(run("verify", "--ckpt-dir", ckpt), shard, "truncated",
                                     str(len(data) - 1000), str(len(data)))
    assert "\n" not in line


def test_verify_detects_a_missing_file(ckpt):
    (ckpt / VIV / "connectors.pt").unlink()
    result = run("verify", "--ckpt-dir", ckpt)
    assert_one_problem_naming(result, ckpt / VIV / "connectors.pt", "missing")
    assert "problem(s)" in result.stderr and "models download" in result.stderr


def test_verify_detects_a_wrong_shape_in_a_pt_file(ckpt):
    import torch

    path = ckpt / VIV / "control_patch_embed.pt"
    edit_pt(path, lambda s: s.__setitem__("proj.weight", torch.zeros(96, 64, dtype=torch.bfloat16)))
    result = run("verify", "--ckpt-dir", ckpt)
    assert_one_problem_naming(result, path, "'proj.weight'", "[96, 64]", "[96, 128]")
    assert len(problem_lines(result)) == 1, result.stdout


@pytest.mark.parametrize("case", ["bad_json", "index_drops_key", "trailing_bytes", "unexpected_key",
                                  "missing_key", "pickle", "shard_missing"])
def test_verify_detects_other_damage(ckpt, case):
    import torch

    if case == "bad_json":
        file, needles = ckpt / VIV / "controlnet" / "config.json", ("invalid JSON",)
        replace(file, b'{"num_layers": 6,')
    elif case == "index_drops_key":
        index = json.loads((ckpt / INDEX).read_text())
        key, shard = sorted(index["weight_map"].items())[0]
        del index["weight_map"][key]
        replace(ckpt / INDEX, json.dumps(index).encode())
        file, needles = ckpt / COG / "transformer" / shard, (f"'{key}'", "not listed in")
    elif case == "trailing_bytes":
        file, needles = ckpt / VIV / "controlnet" / "diffusion_pytorch_model.safetensors", ("unexpected bytes",)
        replace(file, file.read_bytes() + b"\0" * 16)
    elif case == "unexpected_key":
        file, needles = ckpt / VIV / "connectors.pt", ("'99.to_q.0.weight'", "unexpected key")
        edit_pt(file, lambda s: s.__setitem__("99.to_q.0.weight", torch.zeros(2)))
    elif case == "missing_key":
        file, needles = ckpt / VIV / "control_feat_proj.pt", ("'2.time_mixer.mix_factor'", "missing", "[1]")
        edit_pt(file, lambda s: s.pop("2.time_mixer.mix_factor"))
    elif case == "pickle":
        file, needles = ckpt / VIV / "control_patch_embed.pt", ("pickled objects",)
        buffer = io.BytesIO()
        torch.save({"proj.weight": NotATensor()}, buffer)
        replace(file, buffer.getvalue())
    else:  # shard_missing
        file, needles = ckpt / SHARD_2, ("missing",)
        file.unlink()
    assert_one_problem_naming(run("verify", "--ckpt-dir", ckpt), file, *needles)


def test_verify_without_a_checkpoint_folder(tmp_path):
    result = run("verify", "--ckpt-dir", tmp_path / "nowhere")
    assert result.exit_code == 1
    assert problem_lines(result) == [f"{tmp_path / 'nowhere'}: checkpoint folder does not exist; run "
                                     f"`vividvr models download` or copy the checkpoints in by hand (docs/models.md)"]


def test_verify_checks_an_optional_component_only_when_present(ckpt):
    (ckpt / "RealESRGAN").mkdir()
    (ckpt / "RealESRGAN" / "RealESRGAN_x2plus.pth").write_bytes(b"not the weights")
    result = run("verify", "--ckpt-dir", ckpt)
    assert_one_problem_naming(result, ckpt / "RealESRGAN" / "RealESRGAN_x2plus.pth", str(hub.REALESRGAN_SIZE))


def test_verify_hashes_compares_with_download_metadata(ckpt):
    """Files fetched by huggingface_hub carry (commit, etag) metadata; --hashes re-hashes against it."""
    config = ckpt / VIV / "controlnet" / "config.json"
    meta = ckpt / VIV / ".cache" / "huggingface" / "download" / "controlnet" / "config.json.metadata"
    meta.parent.mkdir(parents=True)
    meta.write_text(f"{'a' * 40}\n{hashlib.sha256(config.read_bytes()).hexdigest()}\n{time.time()}\n")
    assert run("verify", "--hashes", "--ckpt-dir", ckpt).exit_code == 0
    meta.write_text(f"{'a' * 40}\n{'0' * 64}\n{time.time()}\n")
    assert_one_problem_naming(run("verify", "--hashes", "--ckpt-dir", ckpt), config, "sha256", "recorded at download")


# ------------------------------------------------------------------------------------------- path

def test_path_honours_option_then_environment_then_default(tmp_path, monkeypatch):
    assert run("path").stdout.strip() == str(tmp_path / "hf-home" / "vividvr")
    monkeypatch.setenv(hub.CKPT_ENV, str(tmp_path / "from-env"))
    assert run("path").stdout.strip() == str(tmp_path / "from-env")
    assert run("path", "--ckpt-dir", tmp_path / "from-option").stdout.strip() == str(tmp_path / "from-option")
    assert hub.resolve_ckpt_dir(None) == tmp_path / "from-env"


def test_commands_use_the_environment_folder(ckpt, monkeypatch):
    monkeypatch.setenv(hub.CKPT_ENV, str(ckpt))
    assert run("verify").stdout.strip() == "ok"


# ------------------------------------------------------------------------------------------- download

@pytest.mark.parametrize("what", ["default", "required", "vividvr", "cogvideox", "captioner", "textfix", "all"])
def test_download_offline_fails_fast_with_one_line(tmp_path, monkeypatch, what):
    import huggingface_hub

    def no_network(*a, **k):
        raise AssertionError("must not be called offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
    start = time.monotonic()
    result = run("download", "--what", what, "--ckpt-dir", tmp_path / "ck")
    assert time.monotonic() - start < 5
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "offline mode is on (HF_HUB_OFFLINE=1)" in lines[0]
    first = hub.COMPONENTS[hub.GROUPS[what][0]]
    assert str(tmp_path / "ck" / first.folder) in lines[0] and first.hand_copy in lines[0]
    assert result.stdout == ""


def test_download_offline_accepts_files_already_there(ckpt):
    result = run("download", "--what", "required", "--ckpt-dir", ckpt)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"vividvr: {ckpt / VIV}", f"cogvideox: {ckpt / COG}"]


def test_download_network_failure_is_one_line(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    class ConnectError(Exception):
        pass

    def unreachable(*a, **k):
        try:
            raise ConnectError("[Errno -2] Name or service not known")
        except ConnectError as exc:
            raise LocalEntryNotFoundError("An error happened while trying to locate the files on the Hub.\n"
                                          "Please check your internet connection and try again.") from exc

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    result = run("download", "--what", "vividvr", "--ckpt-dir", tmp_path)
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: cannot download vividvr: no network connection (ConnectError")
    assert str(tmp_path / VIV) in line and "connectors.pt" in line


def test_download_snapshot_is_pinned_filtered_and_checked(tmp_path, monkeypatch, pristine):
    import huggingface_hub

    calls = []

    def fake_snapshot(repo_id, *, revision, local_dir, allow_patterns=None, ignore_patterns=None, **_):
        calls.append((repo_id, revision, Path(local_dir), allow_patterns))
        repo_files = ["testset.zip", "README.md", "connectors.pt", "control_feat_proj.pt",
                      "control_patch_embed.pt", "controlnet/config.json",
                      "controlnet/diffusion_pytorch_model.safetensors"]
        for rel in repo_files:
            if any(fnmatch.fnmatch(rel, p) for p in allow_patterns):
                dst = Path(local_dir) / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(pristine / VIV / rel, dst)
        return str(local_dir)

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    result = run("download", "--what", "vividvr", "--no-progress", "--ckpt-dir", tmp_path)
    assert result.exit_code == 0, result.output
    assert calls == [("csbhr/Vivid-VR", hub.VIVIDVR_REVISION, tmp_path / VIV, list(hub.VIVIDVR.allow_patterns))]
    assert not (tmp_path / VIV / "testset.zip").exists()
    assert sorted(p.relative_to(tmp_path / VIV).as_posix() for p in (tmp_path / VIV).rglob("*") if p.is_file()) == [
        "connectors.pt", "control_feat_proj.pt", "control_patch_embed.pt", "controlnet/config.json",
        "controlnet/diffusion_pytorch_model.safetensors"]

    # A repository whose layout moved: the download "succeeds" but the files are not where expected.
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: None)
    result = run("download", "--what", "cogvideox", "--ckpt-dir", tmp_path)
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert "repository layout differs" in line and "model_index.json" in line


def test_download_github_file_checks_size_and_hash(tmp_path, monkeypatch):
    payload = os.urandom(300_000)
    source = tmp_path / "release.pth"
    source.write_bytes(payload)
    good = dataclasses.replace(hub.TEXTFIX, url=source.as_uri(), size=len(payload),
                               sha256=hashlib.sha256(payload).hexdigest())
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setitem(hub.COMPONENTS, "textfix", good)
    dest = tmp_path / "ck" / "RealESRGAN" / "RealESRGAN_x2plus.pth"

    dest.parent.mkdir(parents=True)
    (dest.parent / (dest.name + ".partial")).write_bytes(payload[:1000])  # left over from an interruption
    result = run("download", "--what", "textfix", "--no-progress", "--ckpt-dir", tmp_path / "ck")
    assert result.exit_code == 0, result.output
    assert dest.read_bytes() == payload and not (dest.parent / (dest.name + ".partial")).exists()

    bad = dataclasses.replace(good, sha256="0" * 64)
    monkeypatch.setitem(hub.COMPONENTS, "textfix", bad)
    dest.unlink()
    result = run("download", "--what", "textfix", "--no-progress", "--ckpt-dir", tmp_path / "ck")
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert "sha256" in line and "0" * 64 in line
    assert not dest.exists() and not list(dest.parent.glob("*.partial"))


def test_download_rejects_an_unknown_choice(tmp_path):
    result = run("download", "--what", "everything", "--ckpt-dir", tmp_path)
    assert result.exit_code == 2


# ------------------------------------------------------------------------------------------- list

def test_list_shows_present_missing_and_incomplete(ckpt):
    result = run("list", "--ckpt-dir", ckpt)
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:] if line and not line[0].isspace()}
    assert rows["vividvr"][1:3] == ["present", "required"]
    assert rows["cogvideox"][1:3] == ["present", "required"]
    assert rows["captioner"][1:3] == ["missing", "optional"]
    assert rows["textfix"][1:3] == ["missing", "optional"]
    assert rows["vividvr"][3:5] == ["27.4", "MiB"]

    (ckpt / VIV / "connectors.pt").unlink()
    result = run("list", "--ckpt-dir", ckpt)
    assert "vividvr    incomplete" in result.stdout
    assert f"{ckpt / VIV / 'connectors.pt'} is missing" in result.stdout
    status = {s.name: s for s in hub.list_models(ckpt)}
    assert status["vividvr"].missing == (ckpt / VIV / "connectors.pt",)
    assert status["cogvideox"].size_bytes == sum(p.stat().st_size for p in (ckpt / COG).rglob("*") if p.is_file())
