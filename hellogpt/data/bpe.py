"""A byte-level BPE trained on the corpus with Hugging Face `tokenizers` (`prepare --tokenizer bpe:N`).

GPT-2's scheme (its split pattern, bytes as printable characters, `<|endoftext|>` between documents) with merges
learned from the training split only, so the validation text stays unseen. The tokenizer is its tokenizer.json
text, which the description carries into meta.json and checkpoints and which transformers loads as it is.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Optional

from hellogpt.data.tokenizer import byte_level_decoder, new_special_names
from hellogpt.errors import UserError
from hellogpt.gpt2 import GPT2_END_OF_TEXT

if TYPE_CHECKING:
    import numpy as np

BPE_KIND = "bpe"
# A pair seen once is noise, not a unit of the corpus: it never becomes a token.
MIN_PAIR_FREQUENCY = 2


class BpeTokenizer:
    """A trained byte-level BPE over a tokenizer.json; `added` special tokens take the ids after its vocabulary."""

    name = BPE_KIND

    def __init__(self, tokenizer_json: str, added: Sequence[str] = ()) -> None:
        from tokenizers import Tokenizer

        from hellogpt.data import hf_json

        self.tokenizer_json = tokenizer_json
        self.added = tuple(added)
        try:
            trained = Tokenizer.from_str(tokenizer_json)
        except Exception as error:  # tokenizers raises plain Exceptions for a malformed document
            raise UserError(f"the BPE tokenizer's tokenizer.json is unreadable ({error}); prepare the dataset again") from None
        own = [token["content"] for token in json.loads(tokenizer_json).get("added_tokens", []) if token.get("special")]
        self.special_tokens: dict[str, int] = {name: trained.token_to_id(name) for name in own}
        base = trained.get_vocab_size(with_added_tokens=True)
        self.special_tokens.update({name: base + index for index, name in enumerate(self.added)})
        self._full_json = hf_json.with_special_tokens(trained, self.special_tokens)
        self._tokenizer = Tokenizer.from_str(self._full_json)
        self._tokenizer.encode_special_tokens = True  # marker strings in text are text
        self.vocab_size: int = self._tokenizer.get_vocab_size(with_added_tokens=True)
        self.eot_id: Optional[int] = self.special_tokens.get(GPT2_END_OF_TEXT)

    @functools.cached_property
    def _bytes_of(self) -> list[bytes]:
        """Every id's bytes: byte-level tokens through GPT-2's printable-character map, specials as UTF-8."""
        to_bytes = byte_level_decoder()
        special_of = {token_id: name for name, token_id in self.special_tokens.items()}
        table = []
        for token_id in range(self.vocab_size):
            if token_id in special_of:
                table.append(special_of[token_id].encode("utf-8"))
            else:
                table.append(to_bytes(self._tokenizer.id_to_token(token_id)))
        return table

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch_to_arrays(self, texts: list[str], dtype: "np.dtype") -> list["np.ndarray"]:
        """Many texts at once on every core (the library's own thread pool), for `prepare`."""
        import numpy as np

        encodings = self._tokenizer.encode_batch_fast(texts, add_special_tokens=False)
        return [np.asarray(encoding.ids, dtype=dtype) for encoding in encodings]

    def decode(self, ids: Sequence[int]) -> str:
        return b"".join(self.token_bytes(token_id) for token_id in ids).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        return self._bytes_of[int(token_id)]

    def description(self) -> dict[str, Any]:
        description: dict[str, Any] = {"kind": BPE_KIND, "tokenizer_json": self.tokenizer_json}
        if self.added:
            description["special_tokens"] = list(self.added)
        return description

    def with_special_tokens(self, names: Sequence[str]) -> BpeTokenizer:
        added = new_special_names(self.special_tokens, names)
        return BpeTokenizer(self.tokenizer_json, self.added + added) if added else self

    def to_hf_json(self) -> str:
        return self._full_json


def train_bpe(texts: Iterable[str], size: int) -> BpeTokenizer:
    """Learn a BPE of at most `size` ids (end-of-text included; at least the 256 bytes and it) from `texts`.

    A corpus with fewer distinct pairs than merges wanted gives a smaller vocabulary: the size is an upper bound.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=size,
        min_frequency=MIN_PAIR_FREQUENCY,
        special_tokens=[GPT2_END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return BpeTokenizer(tokenizer.to_str())
