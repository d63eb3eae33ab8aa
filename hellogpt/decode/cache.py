"""The one KV cache of decoding: keys and values of many sequences, each in its own slot at its own length.

`prefill_slot` fills a slot from a whole context through the model's own forward; `hellogpt.decode.step` then adds
one position per slot and step. `chat` uses one slot, the server one per concurrent request.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Optional

import torch

from hellogpt.model.gpt import GPT


class BatchedKVCache:
    """Keys and values of every layer for `slots` sequences of up to `max_length` positions (default: the model's
    block size), each with its length; preallocated, written in place.

    `spare_slot` adds one more slot that no sequence owns, where the steps' idle (padding) rows write what they
    compute: cheaper than picking the live rows out of every layer's keys and values.
    """

    def __init__(self, model: GPT, slots: int, max_length: Optional[int] = None, spare_slot: bool = False) -> None:
        config = model.config
        weight = model.transformer.wte.weight
        self.max_length = max_length or config.block_size
        self.spare_slot: Optional[int] = slots if spare_slot else None
        shape = (config.n_layer, slots + int(spare_slot), config.n_head, self.max_length, config.head_dim)
        # Zeros past every slot's length, always (`prefill_slot` clears what a slot's last sequence left there): a
        # padded attention weighs those positions 0, and 0 times a stale non-finite value would still be NaN.
        self.keys = torch.zeros(shape, device=weight.device, dtype=weight.dtype)
        self.values = torch.zeros(shape, device=weight.device, dtype=weight.dtype)
        self.lengths = [0] * slots

    @functools.cached_property
    def padding_masks(self) -> torch.Tensor:
        """Row `n`: the additive attention mask of a row that attends to its first `n` positions (0 there, -inf past
        them), for padded attention; built on first use."""
        positions = torch.arange(self.max_length, device=self.keys.device)
        lengths = torch.arange(self.max_length + 1, device=self.keys.device)
        blocked = positions.unsqueeze(0) >= lengths.unsqueeze(1)
        return torch.zeros(blocked.shape, dtype=self.keys.dtype, device=self.keys.device).masked_fill_(blocked, float("-inf"))


@torch.inference_mode()
def prefill_slot(model: GPT, cache: BatchedKVCache, slot: int, context: Sequence[int]) -> torch.Tensor:
    """Run `context` alone through the model into `slot` (replacing what it held); the next token's logits.

    The model's own cached forward does the work, exactly as `chat` prefills; its keys and values are then copied in.
    """
    device = cache.keys.device
    scratch = model.new_cache(batch_size=1, max_length=len(context))
    logits = model.next_token_logits(torch.tensor([list(context)], dtype=torch.long, device=device), scratch)[0]
    cache.keys[:, slot, :, : len(context)] = scratch.keys[:, 0]
    cache.values[:, slot, :, : len(context)] = scratch.values[:, 0]
    # What the slot held past the new length (and a position a failed step may have written) goes back to zero.
    stale_end = min(cache.lengths[slot] + 1, cache.max_length)
    if stale_end > len(context):
        cache.keys[:, slot, :, len(context) : stale_end] = 0
        cache.values[:, slot, :, len(context) : stale_end] = 0
    cache.lengths[slot] = len(context)
    return logits
