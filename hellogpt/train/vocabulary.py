"""Tuning on a tokenizer with added special tokens (the chat markers): which tokenizers fit, and room for new rows.

A chat dataset's tokenizer is the model's own plus `<|im_start|>` and `<|im_end|>`, with ids after the others: a
model whose embedding has rows to spare (ours, padded to 50304) uses them as they are; one without (Hugging Face
GPT-2's 50257, a char model sized to its vocabulary) grows its embedding and head by the new rows, each initialised
to the mean of the existing ones, as transformers' `resize_token_embeddings` does.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from hellogpt.errors import UserError

SPECIAL_TOKENS_KEY = "special_tokens"
# The token embedding of each architecture (gpt2, qwen3) and the head; a tied head is the embedding itself.
EMBEDDINGS = ("transformer.wte.weight", "model.embed_tokens.weight")
HEAD = "lm_head.weight"


def adds_special_tokens(weights_tokenizer: Mapping[str, Any], dataset_tokenizer: Mapping[str, Any]) -> bool:
    """Whether the dataset's tokenizer is the weights' one plus special tokens appended after its own."""
    ours = list(weights_tokenizer.get(SPECIAL_TOKENS_KEY, []))
    theirs = list(dataset_tokenizer.get(SPECIAL_TOKENS_KEY, []))
    same_base = {k: v for k, v in weights_tokenizer.items() if k != SPECIAL_TOKENS_KEY} == {
        k: v for k, v in dataset_tokenizer.items() if k != SPECIAL_TOKENS_KEY
    }
    return same_base and len(theirs) > len(ours) and theirs[: len(ours)] == ours


def with_vocabulary_rows(init: dict[str, Any], vocab_size: int) -> dict[str, Any]:
    """`init` (weights to tune) with at least `vocab_size` embedding rows; new rows are the mean of the others.

    A tied head (GPT-2) stays tied: it is the embedding, grown once."""
    have = int(init["model_args"]["vocab_size"])
    if have >= vocab_size:
        return init
    if init.get("base") is not None:
        origin = init.get("origin") or {}
        raise UserError(
            f"{origin.get('path') or origin.get('source') or 'the base'} has {have} token rows and the chat tokenizer "
            f"needs {vocab_size}: LoRA adapters cannot add rows; tune it fully (without --lora) or start from a "
            "checkpoint of ours (trained with rows to spare)"
        )
    state = dict(init["model"])
    [name] = [name for name in EMBEDDINGS if name in state]
    embedding = state[name]
    head = state.get(HEAD)
    state[name] = grown_rows(embedding, vocab_size)
    if head is not None:
        tied = head is embedding or head.data_ptr() == embedding.data_ptr()
        state[HEAD] = state[name] if tied else grown_rows(head, vocab_size)
    return {**init, "model": state, "model_args": {**init["model_args"], "vocab_size": vocab_size}}


def grown_rows(matrix: torch.Tensor, rows: int) -> torch.Tensor:
    """`matrix` with rows appended up to `rows`, each the mean of the existing rows."""
    mean = matrix.float().mean(dim=0, keepdim=True).to(matrix.dtype)
    return torch.cat([matrix, mean.expand(rows - matrix.shape[0], -1)], dim=0).contiguous()
