"""The one KV cache of decoding: keys and values of many sequences, each in its own slot at its own length.

`prefill_slot` fills a slot from a whole context through the model's own forward; `hellogpt.decode.step` then adds
one position per slot and step. `chat` uses one slot, the server one per concurrent request.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Optional

import torch

from hellogpt.model.base import CausalLM


class BatchedKVCache:
    """Keys and values of every layer for `slots` sequences of up to `max_length` positions (default: the model's
    block size), each with its length; preallocated, written in place.

    `spare_slot` adds one more slot that no sequence owns, where the steps' idle (padding) rows write what they
    compute: cheaper than picking the live rows out of every layer's keys and values.
    """

    def __init__(self, model: CausalLM, slots: int, max_length: Optional[int] = None, spare_slot: bool = False) -> None:
        config = model.config
        weight = model.input_embeddings().weight
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


    def sequences(self, first_slot: int = 0, count: int = 1) -> SlotWindow:
        """Slots `first_slot`.. seen as one batch of sequences of one length, for the model's own cached forward."""
        return SlotWindow(self, first_slot, count)


class SlotWindow:
    """Neighbouring slots of a `BatchedKVCache` as the model's forward sees a cache (`hellogpt.model.gpt.KVCache`):
    its keys and values go straight into those slots."""

    def __init__(self, cache: BatchedKVCache, first_slot: int, count: int) -> None:
        self._cache = cache
        self._slots = slice(first_slot, first_slot + count)
        self.max_length = cache.max_length

    @property
    def length(self) -> int:
        return self._cache.lengths[self._slots.start]

    def store(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this step's keys/values for `layer`; return all keys/values so far."""
        start = self.length
        end = start + keys.size(2)
        if end > self.max_length:
            raise ValueError(f"KV cache holds {self.max_length} positions; {end} requested")
        self._cache.keys[layer, self._slots, :, start:end] = keys
        self._cache.values[layer, self._slots, :, start:end] = values
        return self._cache.keys[layer, self._slots, :, :end], self._cache.values[layer, self._slots, :, :end]

    def advance(self, n_tokens: int) -> None:
        for slot in range(self._slots.start, self._slots.stop):
            self._cache.lengths[slot] += n_tokens

    def reset(self) -> None:
        """Start the window's sequences again (what they held is overwritten as they grow)."""
        for slot in range(self._slots.start, self._slots.stop):
            self._cache.lengths[slot] = 0


@torch.inference_mode()
def prefill_slot(model: CausalLM, cache: BatchedKVCache, slot: int, context: Sequence[int]) -> torch.Tensor:
    """Run `context` alone through the model into `slot` (replacing what it held); the next token's logits.

    The model's own cached forward does the work, writing its keys and values into the slot.
    """
    # What the slot held past the new length (and a position a failed step may have written) goes back to zero,
    # and so does all it held if the forward fails: past a slot's length there are only zeros (see above).
    stale_end = min(max(cache.lengths[slot] + 1, len(context)), cache.max_length)
    cache.lengths[slot] = 0
    try:
        ids = torch.tensor([list(context)], dtype=torch.long, device=cache.keys.device)
        logits = model.next_token_logits(ids, cache.sequences(slot))[0]
    except BaseException:
        cache.keys[:, slot, :, :stale_end] = 0
        cache.values[:, slot, :, :stale_end] = 0
        cache.lengths[slot] = 0
        raise
    if stale_end > len(context):
        cache.keys[:, slot, :, len(context) : stale_end] = 0
        cache.values[:, slot, :, len(context) : stale_end] = 0
    return logits
