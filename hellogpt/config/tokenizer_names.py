"""The tokenizer names `data.tokenizer` and `prepare --tokenizer` accept: gpt2, char, or bpe:N (a byte-level BPE of
N ids trained on the corpus). Kept free of imports so the schema, `prepare` and its workers share one rule."""

from __future__ import annotations

from typing import Optional

FIXED_TOKENIZER_NAMES = ("gpt2", "char")
BPE_PREFIX = "bpe:"
# 256 byte tokens are the least a byte-level BPE has (plus its end-of-text); 65536 ids still fit uint16 bins.
MIN_BPE_SIZE = 256
MAX_BPE_SIZE = 65536
TOKENIZER_NAMES_HELP = f"gpt2, char or {BPE_PREFIX}N (a BPE of N ids trained on the corpus, {MIN_BPE_SIZE} <= N <= {MAX_BPE_SIZE})"


def bpe_size(name: str) -> Optional[int]:
    """N of a valid `bpe:N`, else None."""
    if not name.startswith(BPE_PREFIX):
        return None
    digits = name[len(BPE_PREFIX):]
    if not digits.isascii() or not digits.isdigit():
        return None
    size = int(digits)
    return size if MIN_BPE_SIZE <= size <= MAX_BPE_SIZE else None


def check_tokenizer_name(name: str) -> str:
    """`name` when valid; else a ValueError that says what is accepted (the schema and `prepare` word it)."""
    if name in FIXED_TOKENIZER_NAMES or bpe_size(name) is not None:
        return name
    raise ValueError(f"unknown tokenizer {name!r}: use {TOKENIZER_NAMES_HELP}, e.g. {BPE_PREFIX}8192")
