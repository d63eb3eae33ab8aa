"""Our tokenizers as Hugging Face `tokenizer.json` documents, which transformers' PreTrainedTokenizerFast (and
AutoTokenizer) loads with the same ids as hellogpt: how an exported model keeps its tokenizer.

Built with the `tokenizers` library (a dependency of transformers), imported only here and when a BPE is trained.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Every character of a char vocabulary on its own, newlines included ('.' would skip them).
ONE_CHARACTER_PATTERN = r"[\s\S]"


def gpt2_json(data_dir: Path, special_tokens: dict[str, int]) -> str:
    """GPT-2's byte-level BPE from its encoder.json and vocab.bpe (as transformers' GPT2 converter builds it)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = json.loads((data_dir / "encoder.json").read_text(encoding="utf-8"))
    merge_lines = (data_dir / "vocab.bpe").read_text(encoding="utf-8").splitlines()[1:]
    merges = [tuple(line.split(" ")) for line in merge_lines if line]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return with_special_tokens(tokenizer, special_tokens)


def char_json(chars: str, special_tokens: dict[str, int]) -> str:
    """A character vocabulary: every character is a pre-token and a token of a BPE without merges (transformers has
    no character tokenizer; a WordLevel model would need an unknown token we do not have)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    tokenizer = Tokenizer(models.BPE(vocab={char: index for index, char in enumerate(chars)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(ONE_CHARACTER_PATTERN), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return with_special_tokens(tokenizer, special_tokens)


def with_special_tokens(tokenizer: Any, special_tokens: dict[str, int]) -> str:
    """Add the special tokens in id order and return the JSON, checking that each got the id hellogpt gives it."""
    from tokenizers import AddedToken

    for name, token_id in sorted(special_tokens.items(), key=lambda item: item[1]):
        tokenizer.add_special_tokens([AddedToken(name, special=True, normalized=False)])
        given = tokenizer.token_to_id(name)
        if given != token_id:
            raise ValueError(f"special token {name!r} got id {given} in tokenizer.json, not hellogpt's {token_id}")
    return tokenizer.to_str()
