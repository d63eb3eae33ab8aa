"""What a `prepare` worker process runs: its encoder, built once, and the encoding of one group of chunks.

Kept apart from `prepare.py` so that a spawned worker imports only the tokenizer and numpy (not the config schema
and its pydantic): a worker's start-up is time the whole `prepare` waits for.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any, Optional

import numpy as np

from hellogpt.data.tokenizer import Tokenizer, tokenizer_from_description

ArrayEncoder = Callable[[str], np.ndarray]


def array_encoder(tokenizer: Tokenizer, dtype: np.dtype) -> ArrayEncoder:
    """text -> ids in the bin's dtype, through the tokenizer's array encoder when it has one."""
    encode_to_array = getattr(tokenizer, "encode_to_array", None)
    if encode_to_array is not None:
        return lambda text: encode_to_array(text).astype(dtype, copy=False)
    return lambda text: np.asarray(tokenizer.encode(text), dtype=dtype)


# Each worker process builds its encoder once, in its initializer; the pool then sends it only text.
_encoder: Optional[ArrayEncoder] = None


def start_encoder(tokenizer_description: dict[str, Any], dtype: str) -> None:
    global _encoder
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    _encoder = array_encoder(tokenizer_from_description(tokenizer_description), np.dtype(dtype))


def encode(text: str) -> np.ndarray:
    assert _encoder is not None, "the pool's initializer sets the encoder"
    return _encoder(text)
