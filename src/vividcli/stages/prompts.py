"""Text prompts from captions: "<caption> <fixed suffix>" and the fixed negative prompt (the reference's)."""

from __future__ import annotations

from typing import Sequence

POSITIVE_SUFFIX = (
    "Cinematic, High Contrast, highly detailed, taken using a Canon EOS R camera, hyper detailed photo - "
    "realistic maximum detail, 32k, Color Grading, ultra HD, extreme meticulous detailing, skin pore "
    "detailing, hyper sharpness, perfect without deformations."
)
NEGATIVE_PROMPT = (
    "painting, oil painting, illustration, drawing, art, sketch, oil painting, cartoon, CG Style, 3D render, "
    "unreal engine, blurring, dirty, messy, worst quality, low quality, frames, watermark, signature, jpeg "
    "artifacts, deformed, lowres, over-smooth"
)


def build_prompts(captions: Sequence[str]) -> tuple[list[str], list[str]]:
    """Per-tile (positive, negative) prompt lists: "<caption> <suffix>" and the fixed negative."""
    positives = [f"{caption} {POSITIVE_SUFFIX}" for caption in captions]
    negatives = [NEGATIVE_PROMPT for _ in captions]
    return positives, negatives
