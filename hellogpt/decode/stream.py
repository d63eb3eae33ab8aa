"""One sequence decoded alone, token by token: what `chat`, training-time samples and `eval` run (a batch of one).

The context is prefilled into a one-slot cache, then each token goes through the batched step (`hellogpt.decode.step`)
with one row.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Callable, Optional

import torch

from hellogpt.decode.cache import BatchedKVCache, prefill_slot
from hellogpt.decode.sampling import sample_next_token
from hellogpt.decode.step import DecodingModel, decode_step
from hellogpt.model.gpt import GPT

# When the context outgrows block_size, the cache restarts from the most recent half of it:
# one prefill of block_size/2 tokens buys block_size/2 cheap decoding steps, so the re-prefill
# costs a few percent of the decoding time while the model still sees at least half a window.
SLIDE_KEEP_FRACTION = 0.5


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

    The model sees at most its `block_size` most recent tokens: a longer prompt keeps its tail, and when
    the cache fills up it is rebuilt from the last `SLIDE_KEEP_FRACTION` of the window.
    `on_window_slide(dropped_tokens)` is called the first time tokens fall out of the context.
    Only ids below `vocab_size` (the tokenizer's size) are ever drawn: a model's vocabulary is often padded past
    its tokenizer's (50304 over GPT-2's 50257) and the padding ids decode to nothing.
    Inference mode is on only while the model runs, never while the caller holds the iterator.
    """
    if not prompt_ids:
        raise ValueError("the prompt is empty: give at least one token")
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be the tokenizer's size (> 0), got {vocab_size}")
    block_size = model.config.block_size
    keep = max(1, int(block_size * SLIDE_KEEP_FRACTION))
    context = list(prompt_ids)
    slid = False
    if len(context) > block_size:
        if on_window_slide is not None:
            on_window_slide(len(context) - block_size)
        slid = True
        context = context[-block_size:]
    # A cache as long as this reply can grow, not block_size: allocating it is part of the first token's wait.
    cache = BatchedKVCache(model, slots=1, max_length=min(block_size, len(context) + max_new_tokens))
    decoding = DecodingModel(model)  # each token through the lean step (the same logits as the model's forward)
    logits = prefill_slot(model, cache, 0, context)
    for produced in range(1, max_new_tokens + 1):
        token = sample_next_token(
            logits[:vocab_size], temperature=temperature, top_k=top_k, top_p=top_p, generator=generator
        )
        if token == eot_id:
            return
        yield token
        if produced == max_new_tokens:
            return
        context.append(token)
        if cache.lengths[0] < cache.max_length:
            logits = decode_step(decoding, cache, {0: token})[0]
            continue
        if not slid and on_window_slide is not None:
            on_window_slide(len(context) - keep)
        slid = True
        context = context[-keep:]
        logits = prefill_slot(model, cache, 0, context)
