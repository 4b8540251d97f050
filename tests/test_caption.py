"""Captions: frame sampling, per-clip/per-tile plumbing (against the reference goldens), caption
sources, the captions file, a real (tiny, random) transformers VLM, and the CogVLM2 refusal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from vividcli.config import RestoreOptions
from vividcli.errors import UsageError, VividError
from vividcli.media.reader import ArraySource
from vividcli.planning.captions import caption_regions
from vividcli.planning.plan import plan_restoration
from vividcli.stages import captioners as cap
from vividcli.stages.caption import (
    CaptionsFile,
    FixedCaptions,
    NoCaptions,
    caption_plan,
    generate_captions,
    sample_frame_indices,
)
from vividcli.stages.caption_file import load_captions_file, write_captions_file
from vividcli.stages.captioners import CAPTION_PROMPT, CogVLM2Captioner, TransformersCaptioner, make_captioner
from vividcli.stages.prompts import POSITIVE_SUFFIX, build_prompts

# --------------------------------------------------------------------------- frame sampling


def reference_get_index(total_frames: int, fps: float | None) -> list[int]:
    """Oracle: the rule of the reference CogVLM2_Captioner (`fps or min(15, T)`, then get_index)."""
    fps = round(fps if fps else min(15, total_frames))
    num_segments = max(total_frames // fps, 1)
    index_list = [i * fps for i in range(num_segments)]
    if index_list[-1] != total_frames - 1:
        index_list.append(total_frames - 1)
    return index_list


@pytest.mark.parametrize(
    ("num_frames", "fps", "expected"),
    [
        (17, 24, [0, 16]),  # golden clips: 17 frames at 24 fps -> first and last
        (121, 24, [0, 24, 48, 72, 96, 120]),  # default clip: one frame a second plus the last
        (121, 30, [0, 30, 60, 90, 120]),  # last already sampled: not repeated
        (49, 23.976, [0, 24, 48]),  # NTSC film rounds to 24
        (49, 29.97, [0, 48]),  # 29.97 rounds to 30; one second's worth, then the last frame
        (25, 2.5, [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24]),  # Python rounding: 2.5 -> 2
        (10, None, [0, 9]),  # no fps: min(15, frames) = 10
        (10, 0, [0, 9]),
        (1, 24, [0]),
        (5, 0.3, [0, 1, 2, 3, 4]),  # reference divides by zero here; we step 1
    ],
)
def test_sample_frame_indices(num_frames: int, fps: float | None, expected: list[int]) -> None:
    assert sample_frame_indices(num_frames, fps) == expected


@given(st.integers(1, 400), st.one_of(st.none(), st.floats(0.51, 120)))
def test_sample_frame_indices_is_the_reference_rule(num_frames: int, fps: float | None) -> None:
    assert sample_frame_indices(num_frames, fps) == reference_get_index(num_frames, fps)


# --------------------------------------------------------------------------- plumbing


class Recorder:
    """A Captioner that records what it is given and answers with a fixed script."""

    def __init__(self, answers: list[str] | None = None):
        self.calls: list[tuple[torch.Tensor, float]] = []
        self.answers = answers

    def caption(self, video: torch.Tensor, fps: float) -> str:
        self.calls.append((video.clone(), fps))
        return self.answers[len(self.calls) - 1] if self.answers else f"call {len(self.calls) - 1}"


class CountingSource(ArraySource):
    """ArraySource that records every frames() range it is asked for."""

    def __init__(self, frames, fps=24):
        super().__init__(frames, fps)
        self.reads: list[tuple[int, int | None]] = []

    def frames(self, start: int = 0, stop: int | None = None):
        self.reads.append((start, stop))
        return super().frames(start, stop)


def coded_frames(num_frames: int, height: int, width: int) -> list[np.ndarray]:
    """Frames whose pixels say where they are: R = row, G = column, B = frame (all scaled to [0, 1))."""
    rows = np.arange(height, dtype=np.float32)[:, None] / 256
    cols = np.arange(width, dtype=np.float32)[None, :] / 256
    out = []
    for f in range(num_frames):
        frame = np.empty((height, width, 3), np.float32)
        frame[..., 0], frame[..., 1], frame[..., 2] = rows, cols, f / 256
        out.append(frame)
    return out


def decode_tile(video: torch.Tensor, fps: float) -> str:
    """What a coded tile video covers: 'h0,w0,h,w|first frame..last frame|frame count'."""
    first = video[0]
    h0, w0 = round(float(first[0, 0, 0]) * 256), round(float(first[1, 0, 0]) * 256)
    frames = [round(float(v) * 256) for v in video[:, 2, 0, 0]]
    return f"{h0},{w0},{video.shape[2]},{video.shape[3]}|{frames[0]}..{frames[-1]}|{len(frames)}"


class CodedCaptioner:
    def caption(self, video: torch.Tensor, fps: float) -> str:
        return decode_tile(video, fps)


def multi_plan(num_frames: int = 30, height: int = 48, width: int = 80, clip_frames: int = 17, tile_size: int = 4):
    options = RestoreOptions(upscale=1.0, tile_size=tile_size, clip_frames=clip_frames)
    return plan_restoration(num_frames, height, width, options), options


def test_caption_plan_per_clip_per_tile_row_major() -> None:
    plan, options = multi_plan()
    assert len(plan.clips) == 3 and len(plan.tiles) == 8  # 2 rows x 4 columns of latent tiles
    source = CountingSource(coded_frames(30, 48, 80))
    captions = caption_plan(plan, source, CodedCaptioner(), 24.0)
    regions = caption_regions(plan)
    assert [(r.h0, r.w0) for r in regions] == sorted((r.h0, r.w0) for r in regions)  # row-major
    expected = [
        [f"{r.h0},{r.w0},{r.h1 - r.h0},{r.w1 - r.w0}|{clip.start}..{clip.stop - 1}|{clip.padded_frames}"
         for r in regions]
        for clip in plan.clips
    ]
    assert captions == expected
    assert captions[2][0].endswith("|16..29|17")  # short last clip padded 14 -> 17 with its last frame
    # streaming: each clip read on its own, never the whole video
    assert source.reads == [(clip.start, clip.stop) for clip in plan.clips]


def test_plan_knows_its_tile_size() -> None:
    """The plan records its tile size, so caption regions need nothing else: one region per latent tile."""
    for tile_size, size in [(4, (48, 80)), (4, (32, 32)), (6, (64, 104)), (8, (48, 48)), (2, (16, 48))]:
        plan, _ = multi_plan(num_frames=9, height=size[0], width=size[1], tile_size=tile_size)
        assert plan.tile_size == tile_size
        regions = caption_regions(plan)
        assert len(regions) == len(plan.tiles)


def test_progress_and_type_check() -> None:
    plan, _ = multi_plan(num_frames=9)
    seen = []
    caption_plan(plan, ArraySource(coded_frames(9, 48, 80)), Recorder(), 24,
                 progress=lambda c, k, text: seen.append((c, k, text)))
    assert seen == [(0, k, f"call {k}") for k in range(8)]

    class Bad:
        def caption(self, video, fps):
            return None

    with pytest.raises(TypeError, match="not str"):
        caption_plan(plan, ArraySource(coded_frames(9, 48, 80)), Bad(), 24)


GOLDEN_CASES = ["case_c_whole_video", "case_d_temporal_aggregation", "case_f_whole_video_frame_padding",
                "case_g_temporal_aggregation_padding"]


@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_caption_inputs_match_reference(reference_dir: Path, case: str) -> None:
    """Tile videos, order, fps and captions as in the reference's captioner calls; the tile pixels
    equal the reference formula F.interpolate(pad(upscale(clip)), gen, bicubic)[tile] bit for bit."""
    golden = json.loads((reference_dir / "golden" / f"{case}.json").read_text())
    args = golden["args"]
    frames_u8 = np.load(reference_dir / "inputs" / golden["input_file"])
    frames = frames_u8.astype(np.float32) / np.float32(255)
    options = RestoreOptions(upscale=args["upscale"], tile_size=args["tile_size"],
                             clip_frames=args["num_temporal_process_frames"])
    plan = plan_restoration(*frames.shape[:3], options)
    calls = golden["captioner_calls"]
    recorder = Recorder([call["caption"] for call in calls])
    captions = generate_captions(plan, ArraySource(list(frames)), recorder, golden["info_after_upscale"]["fps"])

    assert len(recorder.calls) == len(calls)
    assert [[call["caption"] for call in calls if call["clip"] == c] for c in range(golden["num_clips"])] == captions
    for (video, fps), call in zip(recorder.calls, calls):
        assert list(video.shape) == call["tile_video_shape"]
        assert fps == call["fps"]

    # reference formula, whole-video tensors at once
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
    if args["upscale"] != 1.0:
        video = F.interpolate(video, scale_factor=args["upscale"], mode="bicubic").clip(0, 1)
    gen = tuple(golden["gen_height_width"])
    regions = caption_regions(plan)
    k = 0
    for clip in plan.clips:
        clip_video = video[clip.start : clip.stop]
        if clip.padding:
            clip_video = torch.cat([clip_video, clip_video[-1:].repeat(clip.padding, 1, 1, 1)])
        clip_video = F.interpolate(clip_video, size=gen, mode="bicubic")
        for r in regions:
            assert torch.equal(recorder.calls[k][0], clip_video[:, :, r.h0 : r.h1, r.w0 : r.w1])
            k += 1


# --------------------------------------------------------------------------- non-model sources


class NoFrames(ArraySource):
    def frames(self, start: int = 0, stop: int | None = None):
        raise AssertionError("a caption source without a model must not read frames")


def test_fixed_and_no_captions() -> None:
    plan, _ = multi_plan()
    source = NoFrames(coded_frames(1, 48, 80))
    assert generate_captions(plan, source, FixedCaptions("a cat"), 24) == [["a cat"] * 8] * 3
    empty = generate_captions(plan, source, NoCaptions(), 24)
    assert empty == [[""] * 8] * 3
    positives, _ = build_prompts(empty[0])
    assert positives[0] == " " + POSITIVE_SUFFIX  # reference f"{caption} {suffix}": leading space kept
    assert FixedCaptions("x").caption(torch.zeros(1, 3, 8, 8), 24) == "x"


def test_captions_file_round_trip(tmp_path: Path) -> None:
    plan, _ = multi_plan()
    captions = caption_plan(plan, ArraySource(coded_frames(30, 48, 80)), CodedCaptioner(), 24)
    captions[1][3] = 'edited: "quotes", ünïcode, new\nline'
    path = write_captions_file(tmp_path / "in.captions.json", captions)
    assert load_captions_file(path, len(plan.clips), len(plan.tiles)) == captions
    assert generate_captions(plan, NoFrames(coded_frames(1, 48, 80)), CaptionsFile(path), 24) == captions
    # overwrite in place, no temp files left behind
    write_captions_file(path, [["a"] * 8] * 3)
    assert json.loads(path.read_text(encoding="utf-8")) == [["a"] * 8] * 3
    assert [p.name for p in tmp_path.iterdir()] == ["in.captions.json"]
    # a file for another plan is refused with a one-line message
    with pytest.raises(UsageError, match="has 3 clip"):
        generate_captions(multi_plan(num_frames=9, height=32, width=32)[0], NoFrames(coded_frames(1, 32, 32)),
                          CaptionsFile(path), 24)


def test_write_captions_file_errors(tmp_path: Path) -> None:
    with pytest.raises(VividError, match="cannot write captions file"):
        write_captions_file(tmp_path / "missing" / "x.json", [["a"]])
    with pytest.raises(UsageError):
        write_captions_file(tmp_path / "x.json", [["a"], ["b", "c"]])
    with pytest.raises(UsageError):
        write_captions_file(tmp_path / "x.json", [["a", 3]])
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- a real transformers VLM

SPECIAL = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]
WORDS = ["a", "the", "video", "frame", "cat", "dog", "sky", "blue", "red", "green", "shows", "of", "in", "and",
         "bright", "dark", "Please", "describe", "this", "detail.", "USER:", "ASSISTANT:", "with", "scene"]
TEMPLATE = (
    "{% for m in messages %}{{ m['role'] | upper }}: {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image> {% elif c['type'] == 'video' %}<video> {% else %}{{ c['text'] }} "
    "{% endif %}{% endfor %}{% endfor %}{% if add_generation_prompt %}ASSISTANT: {% endif %}"
)


@pytest.fixture(scope="module")
def tiny_vlm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random LLaVA (CLIP vision tower + Llama text model) and its processor, saved like a hub
    checkpoint. Everything is built offline: a word-level tokenizer, the PIL CLIP image processor."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoModelForImageTextToText, LlavaConfig, LlavaProcessor, PreTrainedTokenizerFast
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    vocab = {t: i for i, t in enumerate(SPECIAL + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>",
                                        bos_token="<s>", eos_token="</s>",
                                        extra_special_tokens={"image_token": "<image>"})
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=14,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=TEMPLATE)
    config = LlavaConfig(
        text_config=dict(model_type="llama", vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=256, bos_token_id=2, eos_token_id=3, pad_token_id=0,
                         tie_word_embeddings=False),
        vision_config=dict(model_type="clip_vision_model", hidden_size=16, intermediate_size=32,
                           num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14,
                           projection_dim=16),
        image_token_id=vocab["<image>"], vision_feature_select_strategy="default", vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(config)
    path = tmp_path_factory.mktemp("tiny-llava")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


class SpyProcessor:
    """Wraps the real processor; records the calls. With `video=True` it plays a processor with
    video support: it takes `videos=` and hands the frames on to the real processor as images."""

    def __init__(self, real, video: bool):
        self.real, self.calls = real, []
        self.tokenizer, self.chat_template = real.tokenizer, real.chat_template
        self.video_processor = object() if video else None

    def apply_chat_template(self, *args, **kwargs):
        return self.real.apply_chat_template(*args, **kwargs)

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        if "videos" in kwargs:
            (frames,) = kwargs["videos"]
            text = [t.replace("<video>", "<image> " * len(frames)) for t in kwargs["text"]]
            return self.real(text=text, images=list(frames), return_tensors=kwargs["return_tensors"])
        return self.real(**kwargs)


def small_plan():
    """2 clips x 2 latent tiles (rows): 25 frames of 48x32, clip 17, tile 4."""
    plan, _ = multi_plan(num_frames=25, height=48, width=32)
    assert (len(plan.clips), len(plan.tiles)) == (2, 2)
    return plan


def test_transformers_captioner_images_path(tiny_vlm_dir: Path) -> None:
    captioner = TransformersCaptioner(tiny_vlm_dir, device="cpu", dtype=torch.float32, max_new_tokens=6)
    assert captioner.as_images  # LLaVA's processor has no video processor
    spy = captioner.processor = SpyProcessor(captioner.processor, video=False)
    plan = small_plan()
    frames = [np.random.default_rng(i).random((48, 32, 3), dtype=np.float32) for i in range(25)]
    captions = generate_captions(plan, ArraySource(frames), captioner, 8.0)
    assert [len(c) for c in captions] == [2, 2]
    assert all(isinstance(t, str) and t == t.strip() for c in captions for t in c)
    assert any(captions[0] + captions[1])  # the random model did generate words

    # frame sampling: 17 frames at 8 fps -> frames 0, 8, 16, given as 8-bit images of the tile
    assert len(spy.calls) == 4
    first = spy.calls[0]
    assert "Please describe this video in detail." in first["text"][0]
    assert first["text"][0].count("<image>") == 3 and len(first["images"]) == 3
    regions = caption_regions(plan)
    r = regions[0]
    for image, index in zip(first["images"], [0, 8, 16]):
        expected = np.round(np.clip(frames[index][r.h0 : r.h1, r.w0 : r.w1], 0, 1) * 255).astype(np.uint8)
        np.testing.assert_array_equal(image, expected)

    # deterministic: a second run gives the same captions
    assert generate_captions(plan, ArraySource(frames), captioner, 8.0) == captions


def test_transformers_captioner_video_path(tiny_vlm_dir: Path) -> None:
    captioner = TransformersCaptioner(tiny_vlm_dir, device="cpu", dtype=torch.float32, max_new_tokens=4)
    spy = captioner.processor = SpyProcessor(captioner.processor, video=True)
    captioner.as_images = False
    video = torch.rand(17, 3, 24, 32)
    text = captioner.caption(video, 24.0)
    assert isinstance(text, str) and text == captioner.caption(video, 24.0)
    call = spy.calls[0]
    assert call["text"][0].count("<video>") == 1 and CAPTION_PROMPT in call["text"][0]
    (frames,) = call["videos"]
    assert frames.shape == (2, 24, 32, 3) and frames.dtype == np.uint8  # frames 0 and 16
    assert call["do_sample_frames"] is False
    assert call["video_metadata"] == [{"total_num_frames": 17, "fps": 24.0, "frames_indices": [0, 16],
                                       "duration": 17 / 24.0, "height": 24, "width": 32}]


def test_trust_remote_code_only_when_asked(tiny_vlm_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    seen = []
    for auto in (transformers.AutoProcessor, transformers.AutoModelForImageTextToText):
        original = auto.from_pretrained

        def spy(cls, *args, _original=original, **kwargs):
            seen.append("trust_remote_code" in kwargs and kwargs["trust_remote_code"])
            return _original(*args, **kwargs)

        monkeypatch.setattr(auto, "from_pretrained", classmethod(spy))
    TransformersCaptioner(tiny_vlm_dir, device="cpu", dtype=torch.float32)
    assert seen == [False, False]
    TransformersCaptioner(tiny_vlm_dir, device="cpu", dtype="float32", trust_remote_code=True)
    assert seen[2:] == [True, True]


def test_transformers_captioner_load_errors(tmp_path: Path) -> None:
    with pytest.raises(VividError, match="cannot load captioner") as info:
        TransformersCaptioner(tmp_path, device="cpu", dtype=torch.float32)  # a folder without a model
    assert "\n" not in str(info.value)
    with pytest.raises(UsageError, match="unknown dtype"):
        TransformersCaptioner(tmp_path, device="cpu", dtype="float13")


# --------------------------------------------------------------------------- CogVLM2


def test_cogvlm2_refused_on_this_transformers() -> None:
    import transformers

    if int(transformers.__version__.split(".")[0]) < 5:
        pytest.skip("the refusal is about transformers >= 4.44")
    problem = cap.cogvlm2_incompatibility()
    assert problem and transformers.__version__ in problem
    for build in (lambda: CogVLM2Captioner(cap.COGVLM2_MODEL_ID, "cpu", torch.float32, trust_remote_code=True),
                  lambda: make_captioner("zai-org/cogvlm2-llama3-caption", "cpu", torch.float32, True),
                  lambda: CogVLM2Captioner()):
        with pytest.raises(VividError) as info:
            build()  # fails before touching the hub (no network here)
        message = str(info.value)
        assert "\n" not in message and "transformers <= 4.43" in message
        assert "the default captioner" in message and "--captioner MODEL" in message and "--caption" in message


def test_cogvlm2_needs_trust_remote_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cap, "cogvlm2_incompatibility", lambda: None)
    with pytest.raises(UsageError, match="--trust-remote-code"):
        CogVLM2Captioner(cap.COGVLM2_MODEL_ID, "cpu", torch.float32)


def test_make_captioner_routes_by_name(tiny_vlm_dir: Path) -> None:
    assert isinstance(make_captioner(tiny_vlm_dir, "cpu", torch.float32), TransformersCaptioner)
