"""Token ids to text as they arrive: pieces that never split a multi-byte character."""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from typing import Protocol


class TokenBytes(Protocol):
    """The part of the tokenizer contract the streaming decoder needs."""

    def token_bytes(self, token_id: int) -> bytes: ...


class StreamingDecoder:
    """Turns token ids into text pieces as they arrive, holding back a partial multi-byte character.

    The pieces of a sequence joined together equal the tokenizer's `decode` of it
    (invalid bytes become U+FFFD in both).
    """

    def __init__(self, tokenizer: TokenBytes) -> None:
        self._tokenizer = tokenizer
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """The text that `token_id` completes; empty while a character is still incomplete."""
        return self._decoder.decode(self._tokenizer.token_bytes(token_id))

    def flush(self) -> str:
        """Whatever is left at the end (a replacement character for a truncated one)."""
        return self._decoder.decode(b"", final=True)


def stream_text(tokenizer: TokenBytes, token_ids: Iterator[int]) -> Iterator[str]:
    """Text pieces for a stream of token ids, each non-empty, ending with the decoder's remainder."""
    decoder = StreamingDecoder(tokenizer)
    for token_id in token_ids:
        piece = decoder.push(token_id)
        if piece:
            yield piece
    tail = decoder.flush()
    if tail:
        yield tail
