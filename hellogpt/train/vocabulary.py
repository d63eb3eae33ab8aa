"""Tuning on a tokenizer with added special tokens (the chat markers): which tokenizers fit, and room for new rows.

A chat dataset's tokenizer is the model's own plus `<|im_start|>` and `<|im_end|>`, with ids after the others: a
model whose embedding has rows to spare (ours, padded to 50304) uses them as they are; one without (Hugging Face
GPT-2's 50257, a char model sized to its vocabulary) grows its embedding and head by the new rows, each initialised
to the mean of the existing ones, as transformers' `resize_token_embeddings` does.
"""

from __future__ import annotations

from typing import Any, Mapping

from hellogpt.model.added_rows import state_with_rows

SPECIAL_TOKENS_KEY = "special_tokens"


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

    A tied head (GPT-2) stays tied: it is the embedding, grown once. Under LoRA (`init["base"]`, a frozen base) the
    first new row is recorded as `added_rows_from`: only the rows from there on train (`add_row_adapters`)."""
    state, first = state_with_rows(dict(init["model"]), vocab_size)
    if first is None:
        return init
    grown = {**init, "model": state, "model_args": {**init["model_args"], "vocab_size": vocab_size}}
    if init.get("base") is not None:
        grown["added_rows_from"] = first
    return grown
