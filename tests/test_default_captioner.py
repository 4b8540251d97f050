"""The default captioner (Qwen3-VL-4B-Instruct from the checkpoint folder), on a tiny random Qwen3-VL
built offline with transformers' own classes: `restore` and `caption` caption by default, say so,
cache the captions with the job, free the captioner before the restoration models load, and warn
once (then go on with empty captions) when it is not installed; `--captioner none` stays silent;
`vividvr models download` fetches it in its default set."""

from __future__ import annotations

import fnmatch
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from vividcli import hub
from vividcli.cli import app
from vividcli.commands.models import models_app
from vividcli.config import RestoreOptions
from vividcli.engines import vivid as vivid_engine
from vividcli.engines.vivid import VividEngine, VividSettings
from vividcli.media.reader import ArraySource
from vividcli.models.layout import CAPTIONER_FOLDER, CAPTIONER_REPO, CheckpointLayout
from vividcli.models.loading import load_models
from vividcli.planning.plan import plan_restoration
from vividcli.stages import captioners as cap
from vividcli.stages.captioners import TransformersCaptioner, choose_captioner
from vividcli.stages.prompts import POSITIVE_SUFFIX
from vividcli.testing.media import write_video

OPTIONS = RestoreOptions(upscale=1.0, tile_size=4, clip_frames=9, steps=1, seed=7)
TILING = ["--upscale", "1", "--tile-size", "4", "--clip-frames", "9"]
FIX = "vividvr models download --what captioner"

# --------------------------------------------------------------------------- a tiny random Qwen3-VL

SPECIAL = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
           "<|video_pad|>"]
WORDS = ["a", "the", "video", "cat", "dog", "sky", "blue", "red", "green", "shows", "of", "in", "and", "Please",
         "describe", "this", "detail.", "user", "assistant", "seconds>", "<0.0", "<0.3", "<0.7", "<1.0"]
# Qwen's chat layout, cut down: one vision block per image or video, the text, the generation prompt.
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }} {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|> "
    "{% elif c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|> "
    "{% else %}{{ c['text'] }} {% endif %}{% endfor %}<|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}"
)


def write_tiny_qwen3_vl(folder: Path) -> Path:
    """A Qwen3-VL (Qwen3VLConfig: 2 text layers of width 32, a 2-block vision tower of width 16, random
    weights) with its real processor classes (Qwen2-VL image processor, Qwen3-VL video processor) and
    a word-level tokenizer, saved like the hub repository (save_pretrained)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    vocab = {t: i for i, t in enumerate(SPECIAL + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>",
                                        eos_token="<|im_end|>", additional_special_tokens=SPECIAL[2:])
    pixels = {"shortest_edge": 32 * 32, "longest_edge": 64 * 64 * 8}
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(patch_size=16, merge_size=2, temporal_patch_size=2, size=pixels),
        video_processor=Qwen3VLVideoProcessor(patch_size=16, merge_size=2, temporal_patch_size=2, size=pixels),
        tokenizer=tokenizer, chat_template=TEMPLATE)
    config = Qwen3VLConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3],
                                          "mrope_interleaved": True},
                         pad_token_id=vocab["<pad>"], eos_token_id=vocab["<|im_end|>"]),
        vision_config=dict(depth=2, hidden_size=16, intermediate_size=32, num_heads=2, patch_size=16,
                           spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=32, num_position_embeddings=16,
                           deepstack_visual_indexes=[0]),
        image_token_id=vocab["<|image_pad|>"], video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"], vision_end_token_id=vocab["<|vision_end|>"])
    torch.manual_seed(0)
    model = Qwen3VLForConditionalGeneration(config)
    model.generation_config.max_new_tokens = 6
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def ckpt_with_captioner(tiny_ckpt_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny restoration checkpoint (linked, not copied) plus the tiny captioner in its folder."""
    root = tmp_path_factory.mktemp("ckpt-with-captioner")
    for child in tiny_ckpt_dir.iterdir():
        (root / child.name).symlink_to(child, target_is_directory=child.is_dir())
    write_tiny_qwen3_vl(root / CAPTIONER_FOLDER)
    assert CheckpointLayout(root).captioner_missing() is None
    return root


@pytest.fixture(autouse=True)
def short_captions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Random weights rarely stop on their own: 6 new tokens a caption, not 256, keep the tests quick."""
    monkeypatch.setitem(TransformersCaptioner.__init__.__kwdefaults__, "max_new_tokens", 6)


@pytest.fixture(scope="module")
def tiny_models(tiny_ckpt_dir: Path):
    return load_models(tiny_ckpt_dir, torch.float32, "cpu")


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch, tiny_models) -> list[str]:
    """Records, in order, every load of the restoration models and every load and unload of a
    captioner in the vivid engine (the restoration models come from memory: no second load from disk)."""
    seen: list[str] = []
    original_make = vivid_engine.make_captioner

    def load(ckpt_dir, dtype, device, offload="none", weights="bf16", ff_chunks=1):
        seen.append("load restoration models")
        return tiny_models

    def make(*args, **kwargs):
        captioner = original_make(*args, **kwargs)
        seen.append("load captioner")
        unload = captioner.unload

        def recorded_unload():
            unload()
            seen.append("unload captioner")

        captioner.unload = recorded_unload
        return captioner

    monkeypatch.setattr(vivid_engine, "load_models", load)
    monkeypatch.setattr(vivid_engine, "make_captioner", make)
    return seen


@pytest.fixture
def prompts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every positive prompt the pipeline gives T5 (the pipeline's own encode_prompts, recorded; the
    negative prompts, encoded in their own calls, are left out)."""
    import vividcli.pipeline as pipeline

    seen: list[str] = []
    original = pipeline.encode_prompts

    def spy(tokenizer, text_encoder, texts, **kwargs):
        if all(text.endswith(" " + POSITIVE_SUFFIX) for text in texts):
            seen.extend(texts)
        return original(tokenizer, text_encoder, texts, **kwargs)

    monkeypatch.setattr(pipeline, "encode_prompts", spy)
    return seen


def frames(count: int = 13, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((32, 48, 3), dtype=np.float32) for _ in range(count)]


def warnings_in(text: str) -> list[str]:
    return [line for line in text.splitlines() if "warning" in line]


# --------------------------------------------------------------------------- the real processor and model


def test_tiny_qwen3_vl_captions_through_its_video_processor(ckpt_with_captioner: Path) -> None:
    captioner = TransformersCaptioner(ckpt_with_captioner / CAPTIONER_FOLDER, "cpu", torch.float32, max_new_tokens=5)
    assert type(captioner.model).__name__ == "Qwen3VLForConditionalGeneration" and not captioner.as_images
    assert captioner.processor.video_processor.cap_pixels_per_frame is True  # the reference's per-frame cap
    video = torch.rand(17, 3, 40, 56)
    inputs = captioner.processor(**captioner.processor_inputs(video, 24.0))
    assert inputs["video_grid_thw"][:, 0].tolist() == [1]  # frames 0 and 16: one video, one temporal patch
    text = captioner.caption(video, 24.0)
    assert text and text == text.strip() and text == captioner.caption(video, 24.0)  # greedy: deterministic
    # A one-frame clip goes in as an image (Qwen's video processor needs two frames).
    assert captioner.processor_inputs(video[:1], 24.0).keys() >= {"images"}
    assert isinstance(captioner.caption(video[:1], 24.0), str)
    captioner.unload()
    assert captioner.model is None


# --------------------------------------------------------------------------- choosing the captioner


def test_choose_captioner(tmp_path: Path, ckpt_with_captioner: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert choose_captioner("org/model", tmp_path) == cap.CaptionerChoice("org/model")
    assert choose_captioner("none", tmp_path) == cap.CaptionerChoice(None)
    assert choose_captioner("None", ckpt_with_captioner) == cap.CaptionerChoice(None)  # none wins, silently

    found = choose_captioner(None, ckpt_with_captioner)
    assert found == cap.CaptionerChoice(str(ckpt_with_captioner / CAPTIONER_FOLDER), default=True)
    assert CAPTIONER_REPO in found.label

    missing = choose_captioner(None, tmp_path, download_command=f"{FIX} --ckpt-dir {tmp_path}")
    assert missing.model is None and "\n" not in missing.warning
    assert "is not installed" in missing.warning and "empty caption" in missing.warning
    assert "guide" in missing.warning and f"`{FIX} --ckpt-dir {tmp_path}`" in missing.warning

    (tmp_path / CAPTIONER_FOLDER).mkdir()
    (tmp_path / CAPTIONER_FOLDER / "config.json").write_text("{}")
    incomplete = choose_captioner(None, tmp_path)
    assert incomplete.model is None and "incomplete" in incomplete.warning and "model.safetensors" in incomplete.warning

    real_find_spec = cap.importlib.util.find_spec
    monkeypatch.setattr(cap.importlib.util, "find_spec",
                        lambda name, *a: None if name == "torchvision" else real_find_spec(name, *a))
    no_torchvision = choose_captioner(None, ckpt_with_captioner)
    assert no_torchvision.model is None and "pip install torchvision" in no_torchvision.warning


def test_download_command_names_the_folder_only_when_needed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(hub.CKPT_ENV, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert hub.download_command("captioner", tmp_path / "hf" / "vividvr") == FIX
    assert hub.download_command("captioner", tmp_path / "my ckpts") == f"{FIX} --ckpt-dir '{tmp_path / 'my ckpts'}'"


# --------------------------------------------------------------------------- the engine


def test_engine_captions_by_default_and_frees_the_captioner_first(ckpt_with_captioner, events, prompts) -> None:
    """Two inputs of one batch: each is captioned while no restoration model is in memory."""
    messages: list[str] = []
    engine = VividEngine(VividSettings(ckpt_with_captioner, OPTIONS, use_cache=False), say=messages.append)
    plan = plan_restoration(13, 32, 48, OPTIONS)
    assert (len(plan.clips), len(plan.tiles)) == (2, 2)
    for seed in (0, 1):
        out = list(engine.restore(ArraySource(frames(seed=seed))))
        assert len(out) == 13
    assert events == ["load captioner", "unload captioner", "load restoration models"] * 2
    assert messages == [f"captioning 2 tiles x 2 clips with {CAPTIONER_REPO} (the default captioner, "
                        f"{ckpt_with_captioner / CAPTIONER_FOLDER})"] * 2
    # Every prompt is a model caption followed by the fixed suffix (8 = 2 inputs x 2 clips x 2 tiles).
    assert len(prompts) == 8 and all(p.endswith(" " + POSITIVE_SUFFIX) for p in prompts)
    assert all(p[: -len(POSITIVE_SUFFIX) - 1].strip() for p in prompts)


def test_engine_without_the_captioner_warns_once(tiny_ckpt_dir, events, prompts) -> None:
    messages: list[str] = []
    engine = VividEngine(VividSettings(tiny_ckpt_dir, OPTIONS, use_cache=False), say=messages.append)
    for seed in (0, 1):
        list(engine.restore(ArraySource(frames(seed=seed))))
    (line,) = messages
    assert line.startswith("warning: no captions: the default captioner") and f"`{FIX} --ckpt-dir" in line
    assert events == ["load restoration models"]
    assert prompts == [" " + POSITIVE_SUFFIX] * 8  # empty captions, as with --captioner none


# --------------------------------------------------------------------------- the commands


def small_video(tmp_path: Path) -> Path:
    """12 frames of 48x32: 2 clips of 2 tiles at the tests' tiling."""
    write_video(tmp_path / "in.mp4", width=48, height=32, num_frames=12)
    return tmp_path / "in.mp4"


def restore(src: Path, out: Path, ckpt: Path, cache: Path, *extra: str):
    return CliRunner().invoke(app, ["restore", str(src), "-o", str(out), "--ckpt-dir", str(ckpt), *TILING,
                                    "--steps", "1", "--device", "cpu", "--cache-dir", str(cache), *extra])


def test_restore_captions_by_default_and_caches_the_captions(tmp_path, ckpt_with_captioner, events, prompts) -> None:
    src = small_video(tmp_path)
    result = restore(src, tmp_path / "out.mp4", ckpt_with_captioner, tmp_path / "cache")
    assert result.exit_code == 0, result.output
    assert "captioning 2 tiles x 2 clips with Qwen/Qwen3-VL-4B-Instruct" in result.stderr
    assert not warnings_in(result.stderr), result.stderr
    assert events == ["load captioner", "unload captioner", "load restoration models"]
    first = list(prompts)
    assert len(first) == 4 and all(p[: -len(POSITIVE_SUFFIX) - 1].strip() for p in first)
    (job,) = (tmp_path / "cache" / "jobs").iterdir()
    assert list(job.glob("entries/captions*"))  # the captions are kept with the job

    # The same job again: the cached captions are used, nothing is captioned.
    events.clear()
    prompts.clear()
    result = restore(src, tmp_path / "again.mp4", ckpt_with_captioner, tmp_path / "cache")
    assert result.exit_code == 0, result.output
    assert "captioning" not in result.stderr and "using the cached captions" in result.stderr
    assert events == ["load restoration models"] and prompts == first


def test_restore_without_the_captioner_warns_in_one_line_and_proceeds(tmp_path, tiny_ckpt_dir, events, prompts):
    src = small_video(tmp_path)
    result = restore(src, tmp_path / "out.mp4", tiny_ckpt_dir, tmp_path / "cache")
    assert result.exit_code == 0, result.output
    (line,) = warnings_in(result.stderr)
    assert "no captions: the default captioner Qwen/Qwen3-VL-4B-Instruct is not installed" in line
    assert "guide" in line and FIX in line
    assert (tmp_path / "out.mp4").is_file() and prompts == [" " + POSITIVE_SUFFIX] * 4


def test_restore_captioner_none_is_silent(tmp_path, ckpt_with_captioner, events, prompts) -> None:
    src = small_video(tmp_path)
    result = restore(src, tmp_path / "out.mp4", ckpt_with_captioner, tmp_path / "cache", "--captioner", "none")
    assert result.exit_code == 0, result.output
    assert not warnings_in(result.stderr) and "captioning" not in result.stderr, result.stderr
    assert "cached captions" not in result.stderr
    assert events == ["load restoration models"] and prompts == [" " + POSITIVE_SUFFIX] * 4


def test_caption_command_uses_the_default_captioner(tmp_path, ckpt_with_captioner, tiny_ckpt_dir) -> None:
    src = small_video(tmp_path)
    out = tmp_path / "captions.json"
    result = CliRunner().invoke(app, ["caption", str(src), "-o", str(out), *TILING, "--device", "cpu",
                                      "--ckpt-dir", str(ckpt_with_captioner)])
    assert result.exit_code == 0, result.output
    assert "captioning 2 tiles x 2 clips with Qwen/Qwen3-VL-4B-Instruct" in result.stderr
    captions = json.loads(out.read_text())
    assert len(captions) == 2 and all(len(c) == 2 and all(t.strip() for t in c) for c in captions)

    result = CliRunner().invoke(app, ["caption", str(src), "-o", str(out), *TILING, "--overwrite",
                                      "--ckpt-dir", str(tiny_ckpt_dir)])
    assert result.exit_code == 0, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("warning: no captions") and FIX in line
    assert json.loads(out.read_text()) == [["", ""], ["", ""]]

    result = CliRunner().invoke(app, ["caption", str(src), "-o", str(out), *TILING, "--overwrite",
                                      "--captioner", "none", "--ckpt-dir", str(ckpt_with_captioner)])
    assert result.exit_code == 0 and result.stderr == "", result.output
    assert json.loads(out.read_text()) == [["", ""], ["", ""]]


# --------------------------------------------------------------------------- downloads

models_cli = typer.Typer()


@models_cli.callback()
def _root() -> None:
    """Only the models group."""


models_cli.add_typer(models_app, name="models")


def test_download_groups() -> None:
    assert hub.GROUPS["default"] == ("vividvr", "cogvideox", "captioner")
    assert hub.GROUPS["required"] == ("vividvr", "cogvideox")
    assert hub.GROUPS["all"] == ("vividvr", "cogvideox", "captioner", "textfix")
    assert hub.DEFAULT_GROUP == "default"
    captioner = hub.COMPONENTS["captioner"]
    assert captioner.repo_id == CAPTIONER_REPO and captioner.folder == CAPTIONER_FOLDER
    assert len(captioner.revision) == 40 and int(captioner.revision, 16) >= 0  # a full commit hash
    assert not any("cogvlm" in str(c.repo_id).lower() for c in hub.COMPONENTS.values())


@pytest.mark.parametrize(("args", "repos"), [
    ([], ["csbhr/Vivid-VR", "zai-org/CogVideoX1.5-5B", CAPTIONER_REPO]),
    (["--what", "required"], ["csbhr/Vivid-VR", "zai-org/CogVideoX1.5-5B"]),
    (["--what", "captioner"], [CAPTIONER_REPO]),
])
def test_models_download_fetches_the_captioner_by_default(tmp_path, monkeypatch, tiny_ckpt_dir, ckpt_with_captioner,
                                                          args, repos) -> None:
    import huggingface_hub

    folders = {c.repo_id: c.folder for c in hub.COMPONENTS.values() if c.repo_id}
    calls = []

    def fake_snapshot(repo_id, *, revision, local_dir, allow_patterns=None, ignore_patterns=None, **_):
        calls.append((repo_id, revision))
        source = ckpt_with_captioner / folders[repo_id]
        for path in source.rglob("*"):
            rel = path.relative_to(source).as_posix()
            if path.is_dir() or (allow_patterns and not any(fnmatch.fnmatch(rel, p) for p in allow_patterns)):
                continue
            (Path(local_dir) / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(local_dir) / rel)

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    result = CliRunner().invoke(models_cli, ["models", "download", *args, "--no-progress", "--ckpt-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    revisions = {c.repo_id: c.revision for c in hub.COMPONENTS.values()}
    assert calls == [(repo, revisions[repo]) for repo in repos]
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == [
        next(c.name for c in hub.COMPONENTS.values() if c.repo_id == repo) for repo in repos]
    assert (CheckpointLayout(tmp_path).captioner_missing() is None) == (CAPTIONER_REPO in repos)


def test_models_download_help_documents_the_groups() -> None:
    result = CliRunner().invoke(models_cli, ["models", "download", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.stdout.replace("│", " ").split())  # the help panel's border out
    for needle in ("default: what `restore` uses", "required: the restoration models only", "captioner",
                   "Qwen3-VL-4B-Instruct", "all: every part"):
        assert needle in text, needle
    assert "CogVLM" not in text
