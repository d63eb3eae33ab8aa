"""What every byte-level BPE here shares (GPT-2's and `bpe:N`): GPT-2's split pattern, the byte <-> printable
character mapping of their vocabularies, the rule for adding special tokens, and the coding methods of a tokenizer
that a tiktoken `Encoding` runs. Below `tokenizer.py` (which builds every kind) and `bpe.py`, so neither imports
the other's module to reach them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from hellogpt.errors import UserError

if TYPE_CHECKING:
    import numpy as np

# GPT-2's split pattern as tiktoken writes it (tiktoken_ext/openai_public.py, r50k_pat_str).
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""


def new_special_names(present: Iterable[str], names: Sequence[str]) -> tuple[str, ...]:
    """The names of `names` not in `present`, in order and once each: those that get new ids."""
    if isinstance(names, str):
        raise TypeError("with_special_tokens takes a sequence of names, not one string")
    known = set(present)
    added: list[str] = []
    for name in names:
        if not isinstance(name, str) or not name:
            raise UserError(f"a special token must be a non-empty string, not {name!r}")
        if name not in known:
            known.add(name)
            added.append(name)
    return tuple(added)


def byte_level_decoder() -> Callable[[str], bytes]:
    """A byte-level BPE token as written in its vocabulary -> its bytes.

    GPT-2 (and every byte-level BPE of Hugging Face `tokenizers`) writes each byte as a printable character:
    printable Latin-1 bytes stand for themselves, the others (controls, space, ...) for chr(256 + n) in byte
    order. The same mapping as tiktoken's loader.
    """
    printable = [byte for byte in range(256) if chr(byte).isprintable() and chr(byte) != " "]
    others = [byte for byte in range(256) if byte not in printable]
    to_latin1 = str.maketrans({chr(256 + n): chr(byte) for n, byte in enumerate(others)})
    return lambda token: token.translate(to_latin1).encode("latin-1")


class TiktokenTokenizer:
    """The coding half of a tokenizer that a tiktoken `Encoding` runs (GPT-2's and `bpe:N`): the subclass builds
    `encoding`, with its special tokens registered so that `decode` writes them as their strings."""

    encoding: Any

    def encode(self, text: str) -> list[int]:
        """Encode ordinary text; a special token's string in it (`<|endoftext|>`) is text, not the special token."""
        return self.encoding.encode_ordinary(text)

    def encode_to_array(self, text: str) -> "np.ndarray":
        """Ordinary encoding straight into a uint32 array: no Python list, and the GIL is released while
        encoding, so `prepare` runs it on several threads at once (as tiktoken's own batch encoders do)."""
        return self.encoding.encode_to_numpy(text, disallowed_special=())

    def decode(self, ids: Sequence[int]) -> str:
        return self.encoding.decode([int(token_id) for token_id in ids])

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes of one token; a multi-byte character may span several tokens."""
        return self.encoding.decode_single_token_bytes(int(token_id))
