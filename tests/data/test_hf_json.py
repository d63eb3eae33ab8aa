"""Every tokenizer as one tokenizer.json: transformers' PreTrainedTokenizerFast gives hellogpt's ids, specials included."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer as HfTokenizer
from transformers import PreTrainedTokenizerFast

from hellogpt.data.bpe import train_bpe
from hellogpt.data.tokenizer import CharTokenizer, Tokenizer, gpt2_tokenizer

CORPORA = Path(__file__).resolve().parents[2] / "hellogpt" / "data" / "corpora"
CHAT_MARKERS = ["<|im_start|>", "<|im_end|>"]
NON_ASCII = [
    "naïve café — 東京 🚀 Ünïcödé",
    "e\u0301 a\u0308 n\u0303 (combining marks) ﬁ ligature, ZWJ 👩\u200d💻, flags 🇫🇷, 🏳️\u200d🌈",
    "Ελληνικά, русский, العربية, हिन्दी, 한국어\u00a0nbsp\ttab\r\n",
    "  leading spaces, trailing\t\n\n\n   ",
    "it's we'll they're I'M 2024 3.14 $100",
]


def _texts() -> list[str]:
    """A slice of every shipped corpus file, and the non-ASCII samples."""
    corpus = [path.read_text(encoding="utf-8")[:6000] for path in sorted(CORPORA.glob("*/*.txt"))]
    return [*corpus, *NON_ASCII]


@pytest.fixture(scope="module")
def trained_bpe() -> Tokenizer:
    poems = [path.read_text(encoding="utf-8")[:20000] for path in sorted((CORPORA / "poems").glob("*.txt"))]
    return train_bpe(poems, 1024)


@pytest.fixture(scope="module")
def every_char() -> CharTokenizer:
    return CharTokenizer.from_texts(_texts())


def _transformers(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=HfTokenizer.from_str(tokenizer.to_hf_json()))


@pytest.mark.parametrize("kind", ["gpt2", "char", "bpe"])
def test_transformers_gives_hellogpts_ids_on_the_corpora_and_non_ascii_text(
    kind: str, trained_bpe: Tokenizer, every_char: CharTokenizer
) -> None:
    """With the chat markers added (ordinary ids are the same with or without them)."""
    plain = {"gpt2": gpt2_tokenizer(), "char": every_char, "bpe": trained_bpe}[kind]
    ours = plain.with_special_tokens(CHAT_MARKERS)
    theirs = _transformers(ours)
    assert plain.vocab_size == ours.vocab_size - 2
    assert len(theirs) == ours.vocab_size
    for text in _texts():
        ids = ours.encode(text)
        assert theirs(text)["input_ids"] == ids
        assert theirs.decode(ids) == text
    for name, token_id in ours.special_tokens.items():
        assert theirs.convert_tokens_to_ids(name) == token_id
        assert theirs.decode([token_id]) == ours.decode([token_id]) == name


def test_a_char_tokenizer_json_keeps_newlines_and_combining_marks_as_their_own_ids(every_char: CharTokenizer) -> None:
    text = "e\u0301\n\n🇫🇷"
    assert _transformers(every_char)(text)["input_ids"] == every_char.encode(text) and len(every_char.encode(text)) == 6
