"""Captions for every spatial tile of every temporal clip: from a vision-language model, one fixed
text, a captions file, or none.

    captions = generate_captions(plan, source, TransformersCaptioner("Qwen/Qwen2.5-VL-7B-Instruct"), fps)
    write_captions_file("clip.captions.json", captions)      # edit, then --captions-file

What the captioner sees, per clip (reference `infer_whole_video` / `infer_split_clips` +
`prepare_validation_prompts`): the clip's frames upscaled like the control video (bicubic, clipped),
padded to 8k+1 frames by repeating the last one, resized bicubically to the gen size (not clipped),
then cropped to each caption region (`prompts.plan_caption_regions`, one per latent tile, row-major).
The captioner gets that tile video [F, C, h, w] and the input's frame rate, and samples frames
itself (`sample_frame_indices`: one frame per second plus the last frame, like the reference).

Only one clip's frames are held at a time (at the gen size: F x 3 x H x W float32), never the
whole video.
"""

from __future__ import annotations

import inspect
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from vividcli.errors import UsageError, VividError
from vividcli.stages.geometry import caption_video, upscale_video
from vividcli.stages.prompts import CaptionRegion, load_captions_file, parse_captions, plan_caption_regions

if TYPE_CHECKING:
    from vividcli.media.reader import FrameSource
    from vividcli.pipeline import RestorePlan

CAPTION_PROMPT = "Please describe this video in detail."  # reference CogVLM2_Captioner default
COGVLM2_MODEL_ID = "zai-org/cogvlm2-llama3-caption"
DEFAULT_MAX_NEW_TOKENS = 256
"""Generation budget of `TransformersCaptioner`. The prompt is "<caption> <suffix>" tokenised by T5
to 226 tokens and cut there, so text past roughly 200 words never reaches the model; the reference
allows 2048 new tokens, which only costs time."""

COGVLM2_ALTERNATIVE = ("use --captioner Qwen/Qwen2.5-VL-7B-Instruct (any transformers image-text-to-text model), "
                       "--caption TEXT, or --captions-file FILE")

ProgressFn = Callable[[int, int, str], None]
"""progress(clip_index, tile_index, caption), called after each caption."""


@runtime_checkable
class Captioner(Protocol):
    """Describes one tile video: [F, C, H, W] float32, nominally [0, 1] (bicubic overshoot is kept)."""

    def caption(self, video: torch.Tensor, fps: float) -> str: ...


@runtime_checkable
class CaptionSource(Protocol):
    """Captions that do not need the frames (fixed text, none, a file)."""

    def captions_for(self, num_clips: int, num_tiles: int) -> list[list[str]]: ...


# --------------------------------------------------------------------------- frame sampling


def sample_frame_indices(num_frames: int, fps: float | None) -> list[int]:
    """Frames the reference CogVLM2 captioner looks at (`CogVLM2_Captioner.get_index`).

    With step = round(fps) (Python rounding, so 29.97 -> 30 and 23.976 -> 24): frames 0, step,
    2*step, ... (max(num_frames // step, 1) of them, i.e. one per second), plus the last frame if
    not already there. A missing/zero fps means min(15, num_frames), as in the reference.
    Deviation: fps < 0.5 rounds to 0, a ZeroDivisionError in the reference; here the step is 1.
    """
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {num_frames}")
    if not fps:
        fps = min(15, num_frames)
    step = max(1, round(float(fps)))
    indices = [i * step for i in range(max(num_frames // step, 1))]
    if indices[-1] != num_frames - 1:
        indices.append(num_frames - 1)
    return indices


# --------------------------------------------------------------------------- planning and streaming


def plan_tile_size(plan: RestorePlan) -> int:
    """The latent tile size a plan was made with, recovered from its tiles.

    An axis with several tiles has them all exactly tile_size long. If both axes have a single
    tile, any even size covering the latent grid gives the same caption regions (one region, the
    whole frame), so the smallest such size is returned.
    """
    rows = {t.h0 for t in plan.tiles}
    cols = {t.w0 for t in plan.tiles}
    if len(rows) > 1:
        return plan.tiles[0].height
    if len(cols) > 1:
        return plan.tiles[0].width
    size = max(plan.geometry.latent_size)
    return max(2, size + size % 2)


def plan_regions(plan: RestorePlan, tile_size: int | None = None) -> list[CaptionRegion]:
    """Caption regions (pixel boxes on the gen-size video) of `plan`, one per latent tile, row-major."""
    tile_size = plan_tile_size(plan) if tile_size is None else tile_size
    regions = plan_caption_regions(*plan.geometry.gen_size, tile_size)
    if len(regions) != len(plan.tiles):
        raise ValueError(f"tile size {tile_size} gives {len(regions)} caption regions for a plan with "
                         f"{len(plan.tiles)} latent tiles")
    return regions


def read_caption_clip(source: FrameSource, plan: RestorePlan, clip_index: int) -> torch.Tensor:
    """The gen-size caption video of one clip, [P, C, H, W] float32 with P = 8k+1 (padded).

    Equal to the reference's F.interpolate(pad(upscale(frames)), gen_size, "bicubic"), computed
    one frame at a time (both resizes treat frames independently) so the upscaled copy of the
    whole clip is never held next to the gen-size one.
    """
    clip = plan.clips[clip_index]
    geometry = plan.geometry
    count = clip.stop - clip.start
    out = torch.empty((count + clip.padding, 3, *geometry.gen_size), dtype=torch.float32)
    n = 0
    for frame in source.frames(clip.start, clip.stop):
        tensor = torch.from_numpy(np.asarray(frame, dtype=np.float32)).permute(2, 0, 1)[None].contiguous()
        out[n] = caption_video(upscale_video(tensor, geometry.scale_factor), geometry.gen_size)[0]
        n += 1
    if n != count:
        raise VividError(f"expected {count} frames for clip {clip_index}, the source gave {n}")
    if clip.padding:
        out[count:] = out[count - 1]
    return out


def caption_plan(
    plan: RestorePlan,
    source: FrameSource,
    captioner: Captioner,
    fps: float,
    *,
    tile_size: int | None = None,
    progress: ProgressFn | None = None,
) -> list[list[str]]:
    """Run `captioner` on every caption region of every clip: captions[clip][tile], tiles row-major.

    `fps` is the input's frame rate (the reference passes the file's rate, 24 for image folders).
    `tile_size` defaults to the one recovered from the plan (`plan_tile_size`).
    """
    regions = plan_regions(plan, tile_size)
    captions: list[list[str]] = []
    for c in range(len(plan.clips)):
        video = read_caption_clip(source, plan, c)
        clip_captions = []
        for region in regions:
            tile = video[:, :, region.h0 : region.h1, region.w0 : region.w1]
            text = captioner.caption(tile, fps)
            if not isinstance(text, str):
                raise TypeError(f"{type(captioner).__name__}.caption returned {type(text).__name__}, not str")
            clip_captions.append(text)
            if progress is not None:
                progress(c, region.index, text)
        del video
        captions.append(clip_captions)
    return captions


def generate_captions(
    plan: RestorePlan,
    source: FrameSource,
    captioner: Captioner | CaptionSource,
    fps: float,
    *,
    tile_size: int | None = None,
    progress: ProgressFn | None = None,
) -> list[list[str]]:
    """Captions for `plan` from any source: a model (`Captioner`, reads the frames) or a
    `CaptionSource` (`FixedCaptions`, `NoCaptions`, `CaptionsFile`: no frames are read).
    The result is checked: one list per clip, one string per latent tile."""
    num_clips, num_tiles = len(plan.clips), len(plan.tiles)
    if isinstance(captioner, CaptionSource):
        captions = captioner.captions_for(num_clips, num_tiles)
    else:
        captions = caption_plan(plan, source, captioner, fps, tile_size=tile_size, progress=progress)
    return parse_captions(captions, num_clips, num_tiles, source=type(captioner).__name__)


# --------------------------------------------------------------------------- non-model sources


@dataclass(frozen=True)
class FixedCaptions:
    """The same caption for every clip and tile (`--caption TEXT`)."""

    text: str

    def caption(self, video: torch.Tensor, fps: float) -> str:
        return self.text

    def captions_for(self, num_clips: int, num_tiles: int) -> list[list[str]]:
        return [[self.text] * num_tiles for _ in range(num_clips)]


class NoCaptions(FixedCaptions):
    """Empty captions: every prompt is just the fixed suffix. As in the reference, the prompt is
    f"{caption} {suffix}", so it then starts with a space (kept: it changes the T5 tokens)."""

    def __init__(self) -> None:
        super().__init__("")

    def __repr__(self) -> str:
        return "NoCaptions()"


@dataclass(frozen=True)
class CaptionsFile:
    """Captions from a JSON file ([clip][tile] -> text), checked against the plan (`--captions-file`)."""

    path: Path

    def captions_for(self, num_clips: int, num_tiles: int) -> list[list[str]]:
        return load_captions_file(self.path, num_clips, num_tiles)


def write_captions_file(path: str | os.PathLike[str], captions: Sequence[Sequence[str]]) -> Path:
    """Write captions[clip][tile] as the JSON that `--captions-file` reads; atomic (temp + rename)."""
    data = parse_captions([list(c) for c in captions], len(captions), len(captions[0]) if captions else 0,
                          source="captions to write")
    path = Path(path)
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise VividError(f"cannot write captions file {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise VividError(f"cannot write captions file {path}: {exc.strerror or exc}") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# --------------------------------------------------------------------------- transformers VLMs


def _to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] float in [0, 1] (possibly overshooting) -> [N, H, W, C] uint8, rounded."""
    return (video.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(resolved, torch.dtype):
        raise UsageError(f"unknown dtype {dtype!r} (use bfloat16, float16 or float32)")
    return resolved


class TransformersCaptioner:
    """Any vision-language model that transformers loads with AutoProcessor + AutoModelForImageTextToText.

    Per tile: frames sampled like the reference (`sample_frame_indices`), clipped to [0, 1] and
    rounded to 8 bits, given to the processor as one video (with their original frame indices and
    frame rate as metadata, and the processor's own frame sampling off) or, if the processor has
    no video support, as that many images; the prompt is "Please describe this video in detail."
    in the model's chat template; greedy decoding (do_sample=False) of at most `max_new_tokens`;
    the decoded answer is stripped. `trust_remote_code` is passed through only when set.
    """

    def __init__(
        self,
        model_id_or_path: str | os.PathLike[str],
        device: str | torch.device = "cuda",
        dtype: torch.dtype | str = torch.bfloat16,
        trust_remote_code: bool = False,
        *,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        prompt: str = CAPTION_PROMPT,
        as_images: bool | None = None,
    ):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.name = str(model_id_or_path)
        self.device = torch.device(device)
        self.dtype = _resolve_dtype(dtype)
        self.max_new_tokens = max_new_tokens
        self.prompt = prompt
        remote = {"trust_remote_code": True} if trust_remote_code else {}
        try:
            self.processor = AutoProcessor.from_pretrained(model_id_or_path, **remote)
            model = AutoModelForImageTextToText.from_pretrained(model_id_or_path, dtype=self.dtype, **remote)
        except ImportError as exc:
            raise VividError(f"cannot load captioner {self.name}: {_first_line(exc)} "
                             "(install the missing package, e.g. pip install torchvision)") from exc
        except (OSError, ValueError, KeyError) as exc:
            hint = (" (it ships its own code: pass --trust-remote-code if you trust it)"
                    if "trust_remote_code" in str(exc) and not trust_remote_code else "")
            raise VividError(f"cannot load captioner {self.name}: {_first_line(exc)}{hint}") from exc
        self.model = model.to(self.device).eval()
        self.tokenizer = getattr(self.processor, "tokenizer", None) or self.processor
        has_video = getattr(self.processor, "video_processor", None) is not None
        self.as_images = (not has_video) if as_images is None else as_images
        if getattr(self.processor, "chat_template", None) is None:
            raise VividError(f"captioner {self.name} has no chat template; use an instruction-tuned "
                             "vision-language model (e.g. Qwen/Qwen2.5-VL-7B-Instruct)")

    def messages(self, num_frames: int) -> list[dict[str, Any]]:
        visual = [{"type": "image"}] * num_frames if self.as_images else [{"type": "video"}]
        return [{"role": "user", "content": [*visual, {"type": "text", "text": self.prompt}]}]

    def processor_inputs(self, video: torch.Tensor, fps: float) -> dict[str, Any]:
        """Processor keyword arguments for one tile video (before tensors are moved to the device)."""
        indices = sample_frame_indices(video.shape[0], fps)
        frames = _to_uint8_frames(video[indices])
        text = self.processor.apply_chat_template(self.messages(len(indices)), tokenize=False,
                                                  add_generation_prompt=True)
        if self.as_images:
            return {"text": [text], "images": list(frames), "return_tensors": "pt"}
        rate = float(fps) if fps else float(min(15, video.shape[0]))
        metadata = {"total_num_frames": int(video.shape[0]), "fps": rate, "frames_indices": indices,
                    "duration": video.shape[0] / rate, "height": frames.shape[1], "width": frames.shape[2]}
        return {"text": [text], "videos": [frames], "video_metadata": [metadata], "do_sample_frames": False,
                "return_tensors": "pt"}

    @torch.inference_mode()
    def caption(self, video: torch.Tensor, fps: float) -> str:
        if self.model is None:
            raise RuntimeError(f"captioner {self.name} was unloaded")
        inputs = self.processor(**self.processor_inputs(video, fps))
        inputs = {k: self._to_device(v) for k, v in inputs.items()}
        prompt_length = inputs["input_ids"].shape[1]
        output = self.model.generate(**inputs, do_sample=False, num_beams=1, max_new_tokens=self.max_new_tokens)
        return self.tokenizer.decode(output[0, prompt_length:], skip_special_tokens=True).strip()

    def _to_device(self, value: Any) -> Any:
        if not isinstance(value, torch.Tensor):
            return value
        if value.is_floating_point():
            return value.to(self.device, self.dtype)
        return value.to(self.device)

    def unload(self) -> None:
        """Free the model (the restoration needs the GPU memory afterwards)."""
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# --------------------------------------------------------------------------- CogVLM2 (reference captioner)


def cogvlm2_incompatibility() -> str | None:
    """Why the official CogVLM2 caption model cannot run with the installed packages, or None.

    Its hub code (modeling_cogvlm.py, written for transformers 4.42/4.43) overrides
    `_update_model_kwargs_for_generation` and calls
    `self._extract_past_from_model_output(outputs, standardize_cache_format=...)`; transformers 4.44
    dropped that parameter and 5.x dropped the method (see docs/captions.md for everything else that
    breaks). It also imports torchvision.
    """
    import transformers
    from transformers import GenerationMixin

    method = getattr(GenerationMixin, "_extract_past_from_model_output", None)
    if method is None or "standardize_cache_format" not in inspect.signature(method).parameters:
        return (f"its modeling code needs transformers <= 4.43 and transformers {transformers.__version__} "
                "is installed (GenerationMixin._extract_past_from_model_output changed)")
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return "its modeling code imports torchvision, which is not installed"
    return None


class CogVLM2Captioner:
    """The reference captioner (zai-org/cogvlm2-llama3-caption) through its own hub code.

    Works only where that code does (transformers <= 4.43 plus torchvision); elsewhere the
    constructor raises a one-line VividError before loading anything. Prompt, frame sampling and
    generation settings are the reference's (`VRDiT/cogvlm2.py`).
    """

    GENERATION = {"max_new_tokens": 2048, "pad_token_id": 128002, "top_k": 1, "do_sample": False,
                  "top_p": 0.1, "temperature": 0.1}

    def __init__(
        self,
        model_path: str | os.PathLike[str] = COGVLM2_MODEL_ID,
        device: str | torch.device = "cuda",
        dtype: torch.dtype | str = torch.bfloat16,
        trust_remote_code: bool = False,
        *,
        prompt: str = CAPTION_PROMPT,
    ):
        problem = cogvlm2_incompatibility()
        if problem:
            raise VividError(f"the CogVLM2 captioner cannot run here: {problem}; {COGVLM2_ALTERNATIVE}")
        if not trust_remote_code:
            raise UsageError(f"the CogVLM2 captioner runs Python code from the {model_path} repository; "
                             f"pass --trust-remote-code to allow it, or {COGVLM2_ALTERNATIVE}")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = torch.device(device)
        self.dtype = _resolve_dtype(dtype)
        self.prompt = prompt
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=True)
            model = AutoModelForCausalLM.from_pretrained(model_path, torch_dtype=self.dtype, trust_remote_code=True)
        except (ImportError, OSError, ValueError) as exc:
            raise VividError(f"cannot load CogVLM2 from {model_path}: {_first_line(exc)}") from exc
        self.model = model.to(self.device).eval()

    @torch.inference_mode()
    def caption(self, video: torch.Tensor, fps: float) -> str:
        # Reference tensor path: x255 (no clipping), sample frames, [T, C, H, W] -> [C, T, H, W].
        video = video.float() * 255
        video = video[sample_frame_indices(video.shape[0], fps)].permute(1, 0, 2, 3)
        built = self.model.build_conversation_input_ids(
            tokenizer=self.tokenizer, query=self.prompt, images=[video], history=[], template_version="chat"
        )
        inputs = {
            "input_ids": built["input_ids"].unsqueeze(0).to(self.device),
            "token_type_ids": built["token_type_ids"].unsqueeze(0).to(self.device),
            "attention_mask": built["attention_mask"].unsqueeze(0).to(self.device),
            "images": [[built["images"][0].to(self.device).to(self.dtype)]],
        }
        output = self.model.generate(**inputs, **self.GENERATION)
        output = output[:, inputs["input_ids"].shape[1] :]
        return str(self.tokenizer.decode(output[0], skip_special_tokens=True)).strip()

    def unload(self) -> None:
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def make_captioner(
    model_id_or_path: str | os.PathLike[str],
    device: str | torch.device = "cuda",
    dtype: torch.dtype | str = torch.bfloat16,
    trust_remote_code: bool = False,
    **kwargs: Any,
) -> TransformersCaptioner | CogVLM2Captioner:
    """`--captioner NAME`: the CogVLM2 caption model gets `CogVLM2Captioner`, anything else
    `TransformersCaptioner`."""
    name = str(model_id_or_path).rstrip("/")
    if "cogvlm2" in name.rsplit("/", 1)[-1].lower():
        return CogVLM2Captioner(model_id_or_path, device, dtype, trust_remote_code, **kwargs)
    return TransformersCaptioner(model_id_or_path, device, dtype, trust_remote_code, **kwargs)
