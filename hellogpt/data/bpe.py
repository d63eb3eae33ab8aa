"""A byte-level BPE trained on the corpus with Hugging Face `tokenizers` (`prepare --tokenizer bpe:N`).

GPT-2's scheme (its split pattern, bytes as printable characters, `<|endoftext|>` between documents) with merges
learned from the training split only, so the validation text stays unseen. The tokenizer is its tokenizer.json
text, which the description carries into meta.json and checkpoints and which transformers loads as it is.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from typing import Any, Optional

from hellogpt.data.byte_level import GPT2_SPLIT_PATTERN, TiktokenTokenizer, byte_level_decoder, new_special_names
from hellogpt.errors import UserError
from hellogpt.gpt2 import GPT2_END_OF_TEXT

BPE_KIND = "bpe"
# A pair seen once is noise, not a unit of the corpus: it never becomes a token.
MIN_PAIR_FREQUENCY = 2


class BpeTokenizer(TiktokenTokenizer):
    """A trained byte-level BPE over its tokenizer.json; `added` special tokens take the ids after its vocabulary.

    Encoded with tiktoken from the document's vocabulary (a token's id is its merge rank, as the trainer assigns
    them): several times faster than `tokenizers` and free of the GIL, so `prepare` encodes on every core as it does
    for GPT-2. Hugging Face's reading of the same document gives the same ids (tested on the shipped corpora), as
    tiktoken's GPT-2 does against transformers'.
    """

    name = BPE_KIND

    def __init__(self, tokenizer_json: str, added: Sequence[str] = ()) -> None:
        self.tokenizer_json = tokenizer_json
        self.added = tuple(added)
        self._vocab, own_specials = _vocabulary(tokenizer_json)
        base = len(self._vocab)
        self.special_tokens: dict[str, int] = {
            **own_specials, **{name: base + index for index, name in enumerate(self.added)}
        }
        self.vocab_size: int = base + len(self.added)
        self.eot_id: Optional[int] = self.special_tokens.get(GPT2_END_OF_TEXT)

    @functools.cached_property
    def encoding(self) -> Any:
        """The tiktoken encoding, built on first use (a description is often rebuilt only to be read)."""
        import tiktoken

        to_bytes = byte_level_decoder()
        specials = set(self.special_tokens)
        ranks = {to_bytes(token): token_id for token, token_id in self._vocab.items() if token not in specials}
        return tiktoken.Encoding(
            name=BPE_KIND, pat_str=GPT2_SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens=self.special_tokens
        )

    def description(self) -> dict[str, Any]:
        description: dict[str, Any] = {"kind": BPE_KIND, "tokenizer_json": self.tokenizer_json}
        if self.added:
            description["special_tokens"] = list(self.added)
        return description

    def with_special_tokens(self, names: Sequence[str]) -> BpeTokenizer:
        added = new_special_names(self.special_tokens, names)
        return BpeTokenizer(self.tokenizer_json, self.added + added) if added else self

    def to_hf_json(self) -> str:
        from tokenizers import Tokenizer

        from hellogpt.data import hf_json

        return hf_json.with_special_tokens(Tokenizer.from_str(self.tokenizer_json), self.special_tokens)


def _vocabulary(tokenizer_json: str) -> tuple[dict[str, int], dict[str, int]]:
    """The BPE vocabulary (token -> id, special tokens included) and the special tokens of a trained tokenizer.json."""
    unreadable = "the BPE tokenizer's tokenizer.json is unreadable ({}); prepare the dataset again"
    try:
        document = json.loads(tokenizer_json)
        vocab = document["model"]["vocab"]
        specials = {token["content"]: token["id"] for token in document.get("added_tokens", []) if token.get("special")}
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise UserError(unreadable.format(f"{type(error).__name__}: {error}")) from None
    if not isinstance(vocab, dict) or sorted(vocab.values()) != list(range(len(vocab))):
        raise UserError(unreadable.format("its vocabulary's ids are not 0..N-1"))
    return vocab, specials


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
