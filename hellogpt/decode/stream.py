"""One sequence decoded alone, token by token: what `chat`, training-time samples and `eval` run (a batch of one).

The context is prefilled into a one-slot cache, then each token goes through the batched step (`hellogpt.decode.step`)
with one row.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Callable, Optional

import torch

from hellogpt.decode.cache import BatchedKVCache, prefill_slot
from hellogpt.decode.sequence import DecodingSequence
from hellogpt.decode.step import DecodingModel, decode_step
from hellogpt.model.gpt import GPT

def stream_tokens(
    model: GPT,
    prompt_ids: Sequence[int],
    *,
    max_new_tokens: int,
    temperature: float,
    vocab_size: int,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    eot_id: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    on_window_slide: Optional[Callable[[int], None]] = None,
) -> Iterator[int]:
    """Yield up to `max_new_tokens` sampled ids after `prompt_ids`, one at a time; stop at `eot_id`.

    The window, the sampling and the end conditions are those of `DecodingSequence` (`hellogpt.decode.sequence`).
    Inference mode is on only while the model runs, never while the caller holds the iterator.
    """
    sequence = DecodingSequence(
        prompt_ids, block_size=model.config.block_size, vocab_size=vocab_size, max_tokens=max_new_tokens,
        temperature=temperature, top_k=top_k, top_p=top_p, generator=generator, eot_id=eot_id,
        on_window_slide=on_window_slide,
    )
    # A cache as long as this reply can grow, not block_size: allocating it is part of the first token's wait.
    cache = BatchedKVCache(model, slots=1, max_length=min(sequence.block_size, len(sequence.context) + max_new_tokens))
    decoding = DecodingModel(model)  # each token through the lean step (the same logits as the model's forward)
    logits = prefill_slot(model, cache, 0, sequence.context)
    while True:
        token = sequence.choose(logits)
        produced = sequence.produced
        sequence.accept(token)
        if sequence.produced == produced:
            return  # end-of-text ends the reply without joining it
        yield token
        if sequence.finished:
            return
        if sequence.window_is_full(cache.lengths[0]):
            logits = prefill_slot(model, cache, 0, sequence.slide_window())
        else:
            logits = decode_step(decoding, cache, {0: token})[0]
