"""Prompt encoding with CogVideoX's T5, exactly as the reference pipeline does it.

Prompts are tokenised to 226 tokens (padded, truncated), and T5 runs *without* an attention mask:
all 226 output vectors, padding included, condition the DiT.
"""

from __future__ import annotations

import logging

import torch

MAX_SEQUENCE_LENGTH = 226
log = logging.getLogger(__name__)


def encode_prompts(
    tokenizer,
    text_encoder: torch.nn.Module,
    prompts: list[str],
    *,
    device: torch.device | str,
    dtype: torch.dtype,
    max_length: int = MAX_SEQUENCE_LENGTH,
) -> torch.Tensor:
    """[len(prompts), max_length, d_model] T5 embeddings, one batch (as the reference encodes them)."""
    tokens = tokenizer(
        prompts, padding="max_length", max_length=max_length, truncation=True,
        add_special_tokens=True, return_tensors="pt",
    )
    full = tokenizer(prompts, padding="longest", return_tensors="pt").input_ids
    if full.shape[-1] > max_length:
        log.warning("a prompt is longer than %d tokens and was truncated", max_length)
    with torch.no_grad():
        embeds = text_encoder(tokens.input_ids.to(device))[0]
    return embeds.to(device=device, dtype=dtype)
