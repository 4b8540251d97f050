"""Vision-language captioners: any transformers image-text-to-text model, and the CogVLM2 check.

Each implements the `Captioner` protocol of `stages/caption.py` (one tile video in, one caption out);
`make_captioner(name, ...)` picks the back-end for `--captioner`, and `choose_captioner` decides
which model a run uses when `--captioner` is not given (the default captioner, Qwen3-VL-4B-Instruct,
from the checkpoint folder).
"""

from __future__ import annotations

import gc
import importlib.util
import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vividcli.devices import resolve_dtype
from vividcli.errors import UsageError, VividError, describe_exception
from vividcli.models.layout import CAPTIONER_REPO, CheckpointLayout
from vividcli.stages.caption import sample_frame_indices

CAPTION_PROMPT = "Please describe this video in detail."  # reference CogVLM2_Captioner default
COGVLM2_MODEL_ID = "zai-org/cogvlm2-llama3-caption"
DEFAULT_MAX_NEW_TOKENS = 256
"""Generation budget of `TransformersCaptioner`. The prompt is "<caption> <suffix>" tokenised by T5
to 226 tokens and cut there, so text past roughly 200 words never reaches the model; the reference
allows 2048 new tokens, which only costs time."""

COGVLM2_ALTERNATIVE = (f"use the default captioner ({CAPTIONER_REPO}: leave out --captioner; "
                       "`vividvr models download --what captioner` installs it), --captioner MODEL (any transformers "
                       "image-text-to-text model), --caption TEXT, or --captions-file FILE")
DOWNLOAD_CAPTIONER = "vividvr models download --what captioner"


# --------------------------------------------------------------------------- which captioner


@dataclass(frozen=True)
class CaptionerChoice:
    """The captioning model a run uses (`model` None: empty captions) and, when the default
    captioner cannot be used, the one-line warning that says so (without a "warning: " prefix)."""

    model: str | None
    default: bool = False  # the default captioner, from the checkpoint folder
    warning: str | None = None

    @property
    def label(self) -> str:
        """How the log names the model."""
        return f"{CAPTIONER_REPO} (the default captioner, {self.model})" if self.default else str(self.model)


def choose_captioner(captioner: str | None, ckpt_dir: str | os.PathLike[str], *,
                     download_command: str = DOWNLOAD_CAPTIONER) -> CaptionerChoice:
    """Which model captions a run, from `--captioner` and the checkpoint folder (no torch; instant).

    A model id or folder is used as given; "none" means empty captions, silently. Not given (None):
    the default captioner in `<ckpt_dir>/Qwen3-VL-4B-Instruct` when all of its files are there and
    torchvision (which its video processor needs) is installed; otherwise no model, and a warning
    line that says what is lost and names `download_command` (or the package) that fixes it.
    """
    if captioner is not None:
        return CaptionerChoice(None if captioner.strip().lower() == "none" else captioner)
    layout = CheckpointLayout(Path(ckpt_dir))
    lost = ("so every tile gets an empty caption and the restoration loses the scene descriptions that guide it "
            "(pass --captioner none to go without them silently)")
    missing = layout.captioner_missing()
    if missing is not None:
        state = (f"is not installed in {layout.captioner}" if not layout.captioner.exists()
                 else f"is incomplete ({missing} is missing)")
        return CaptionerChoice(None, warning=f"no captions: the default captioner {CAPTIONER_REPO} {state}, {lost}; "
                                             f"install it with `{download_command}`")
    if importlib.util.find_spec("torchvision") is None:
        return CaptionerChoice(None, warning=f"no captions: the default captioner {CAPTIONER_REPO} needs torchvision "
                                             f"(its video processor), which is not installed, {lost}; install it with "
                                             "`pip install torchvision` (matching your torch)")
    return CaptionerChoice(str(layout.captioner), default=True)


def _to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] float in [0, 1] (possibly overshooting) -> [N, H, W, C] uint8, rounded."""
    return (video.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


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
        self.dtype = resolve_dtype(dtype, device)
        self.max_new_tokens = max_new_tokens
        self.prompt = prompt
        remote = {"trust_remote_code": True} if trust_remote_code else {}
        try:
            self.processor = AutoProcessor.from_pretrained(model_id_or_path, **remote)
            model = AutoModelForImageTextToText.from_pretrained(model_id_or_path, dtype=self.dtype, **remote)
        except ImportError as exc:
            raise VividError(f"cannot load captioner {self.name}: {describe_exception(exc)} "
                             "(install the missing package, e.g. pip install torchvision)") from exc
        except (OSError, ValueError, KeyError) as exc:
            hint = (" (it ships its own code: pass --trust-remote-code if you trust it)"
                    if "trust_remote_code" in str(exc) and not trust_remote_code else "")
            raise VividError(f"cannot load captioner {self.name}: {describe_exception(exc)}{hint}") from exc
        self.model = model.to(self.device).eval()
        self.tokenizer = getattr(self.processor, "tokenizer", None) or self.processor
        video_processor = getattr(self.processor, "video_processor", None)
        has_video = video_processor is not None
        self.as_images = (not has_video) if as_images is None else as_images
        if has_video and hasattr(video_processor, "cap_pixels_per_frame") and video_processor.cap_pixels_per_frame is None:
            # Qwen3-VL: cap each frame's pixels as its reference preprocessing (qwen-vl-utils) does,
            # which transformers 5.x announces as its coming default (and warns about until then).
            video_processor.cap_pixels_per_frame = True
        if getattr(self.processor, "chat_template", None) is None:
            raise VividError(f"captioner {self.name} has no chat template; use an instruction-tuned "
                             f"vision-language model (e.g. {CAPTIONER_REPO})")

    def messages(self, num_frames: int, as_images: bool | None = None) -> list[dict[str, Any]]:
        as_images = self.as_images if as_images is None else as_images
        visual = [{"type": "image"}] * num_frames if as_images else [{"type": "video"}]
        return [{"role": "user", "content": [*visual, {"type": "text", "text": self.prompt}]}]

    def processor_inputs(self, video: torch.Tensor, fps: float) -> dict[str, Any]:
        """Processor keyword arguments for one tile video (before tensors are moved to the device).

        A single sampled frame (a one-frame clip) goes in as an image even with video support:
        video processors such as Qwen's need at least two frames (their temporal patch).
        """
        indices = sample_frame_indices(video.shape[0], fps)
        frames = _to_uint8_frames(video[indices])
        as_images = self.as_images or len(indices) == 1
        text = self.processor.apply_chat_template(self.messages(len(indices), as_images), tokenize=False,
                                                  add_generation_prompt=True)
        if as_images:
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
        _free_memory()


def _free_memory() -> None:
    """Collect what was just dropped and hand cached CUDA blocks back, so the next model fits."""
    gc.collect()
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
        self.dtype = resolve_dtype(dtype, device)
        self.prompt = prompt
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=True)
            model = AutoModelForCausalLM.from_pretrained(model_path, torch_dtype=self.dtype, trust_remote_code=True)
        except (ImportError, OSError, ValueError) as exc:
            raise VividError(f"cannot load CogVLM2 from {model_path}: {describe_exception(exc)}") from exc
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
        _free_memory()


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
