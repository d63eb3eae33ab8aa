"""One decoding step for many sequences at once, each row's numbers independent of the others'.

`decode_step` feeds one token to each of several sequences, each at its own position in a `BatchedKVCache`
(`hellogpt.decode.cache`),
driving the model's layers as plain tensor calls (`DecodingModel`): a token of a small model is a hundred small
operations, and module and parameter lookups would cost a sixth of the step. `chat` decodes through it with one
row, the server (`hellogpt.serve`) with many. Attention runs over exactly a row's cached positions, or, given an
`attention_bucket`, over its positions rounded up to a multiple of the bucket with the rest masked: rows of nearby
lengths then share one attention call (a masked, padded attention sums in another order than an exact one, so a
caller picks one way for every step). How the matrix products group rows is the caller's `chunk` (see
`hellogpt.serve.steps`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from hellogpt.decode.cache import BatchedKVCache
from hellogpt.model.base import CausalLM


class DecodingModel:
    """A model's parts as plain callables for the per-token path: one step runs about 120 small operations, and
    looking up each module and parameter through `nn.Module` every time would cost a sixth of the step.

    The model hands over its parts (`embed`, what attention needs of positions, each block's `layers()` and the
    block function that runs them, the final norm and the LM head), so that any architecture decodes here.
    Built from the model as it will decode (after any packing or quantisation: those layers keep their own forward),
    by `chat` per reply and by the server once. Dropout is left out: decoding is evaluation.
    """

    def __init__(self, model: CausalLM) -> None:
        self.model = model
        self.config = model.config
        self.embed = model.embed
        self.attention_positions = model.attention_positions
        self.block_forward = model.block_forward
        # Each block's own parts (`layers`), each made lean; the block itself is the model's `block_forward`.
        self._parts = [_lean_parts(block.layers(dropout=False)) for block in model.blocks]
        self._blocks_by_chunk: dict[Optional[int], list[NamedTuple]] = {}
        self.final_norm = _lean(model.final_norm)
        self.head = _Linear(model.lm_head)

    def blocks(self, chunk: Optional[int]) -> list[NamedTuple]:
        """The blocks' lean parts, their products grouped by `chunk` rows (see `_Linear`)."""
        blocks = self._blocks_by_chunk.get(chunk)
        if blocks is None:
            bind = lambda part: functools.partial(part, chunk=chunk) if isinstance(part, _Linear) else part  # noqa: E731
            blocks = self._blocks_by_chunk[chunk] = [type(parts)(*map(bind, parts)) for parts in self._parts]
        return blocks


Rows = Callable[[torch.Tensor], torch.Tensor]


class _Linear:
    """One linear layer of the decoding path, applied in one product or in products of exactly `chunk` rows each
    (the row count is a multiple of it).

    A plain `nn.Linear` runs as `F.linear` on its tensors, and several fixed-size products as one batched product
    over a broadcast weight (as cheap as one product, and the same numbers as separate ones: the probe checks);
    any other kind (packed, int8) runs through its own forward, chunk by chunk.
    """

    def __init__(self, layer: nn.Module) -> None:
        self._forward: Optional[Rows] = None if type(layer) is nn.Linear else layer.forward
        self._weight, self._bias = (layer.weight, layer.bias) if self._forward is None else (None, None)
        self._broadcast: dict[int, torch.Tensor] = {}  # groups -> the transposed weight seen `groups` times

    def __call__(self, rows: torch.Tensor, chunk: Optional[int]) -> torch.Tensor:
        count = rows.shape[0]
        if self._forward is not None:
            if chunk is None or count == chunk:
                return self._forward(rows)
            return torch.cat([self._forward(part) for part in rows.split(chunk)])
        if chunk is None or count == chunk:
            return F.linear(rows, self._weight, self._bias)
        groups = count // chunk
        weight = self._broadcast.get(groups)
        if weight is None:
            weight = self._broadcast[groups] = self._weight.T.expand(groups, *self._weight.T.shape)
        grouped = rows.reshape(groups, chunk, rows.shape[1])
        products = torch.bmm(grouped, weight) if self._bias is None else torch.baddbmm(self._bias, grouped, weight)
        return products.view(count, -1)


def _lean_parts(parts: NamedTuple) -> NamedTuple:
    """A block's parts (a NamedTuple of the architecture's own kind) with each part made lean."""
    return type(parts)(*map(_lean, parts))


def _lean(part: Rows) -> Rows:
    """A block's part for the per-token path: norms and linear layers called on their tensors, functions kept."""
    if isinstance(part, nn.LayerNorm):
        return _layer_norm(part)
    if isinstance(part, nn.RMSNorm):
        return _rms_norm(part)
    return _Linear(part) if isinstance(part, nn.Module) else part


def _layer_norm(layer: nn.LayerNorm) -> Rows:
    shape, weight, bias, eps = layer.normalized_shape, layer.weight, layer.bias, layer.eps
    return lambda rows: torch.layer_norm(rows, shape, weight, bias, eps)  # F.layer_norm's checks cost more than it


def _rms_norm(layer: nn.RMSNorm) -> Rows:
    shape, weight, eps = layer.normalized_shape, layer.weight, layer.eps
    # The input cast to the gain's dtype: under autocast (samples during training) the rows arrive in bf16.
    return lambda rows: torch.rms_norm(rows.to(weight.dtype), shape, weight, eps)


@torch.inference_mode()
def decode_step(
    model: DecodingModel, cache: BatchedKVCache, tokens: dict[int, int], rows: Optional[Sequence[int]] = None,
    chunk: Optional[int] = None, attention_bucket: Optional[int] = None,
) -> dict[int, torch.Tensor]:
    """Feed one token to each slot in `tokens` (slot -> token), each at its own next position; logits by slot.

    `rows` are the slots computed as rows of the step (default: every slot, idle ones as padding thrown away);
    `chunk` splits the matrix products into calls of exactly that many rows (see `hellogpt.serve.steps`): when the
    rows do not fill the last call, the last row is computed again in the spare places (those copies' results are
    dropped and write nothing). `attention_bucket`: each row attends over its length rounded up to a multiple of
    this, masked (None: over exactly its length). Computes what `GPT.forward` does, one position per row.
    """
    row_slots = list(rows) if rows is not None else list(range(len(cache.lengths)))
    device = cache.keys.device
    config = model.config
    width, heads, head_dim, positions_per_slot = config.n_embd, config.n_head, config.head_dim, cache.max_length
    count = len(row_slots)
    copies = -count % chunk if chunk is not None else 0
    live = [(row, slot) for row, slot in enumerate(row_slots) if slot in tokens]
    positions = [cache.lengths[slot] if slot in tokens else 0 for slot in row_slots]
    token_list = [tokens.get(slot, 0) for slot in row_slots]
    token_ids = torch.tensor(token_list + token_list[-1:] * copies, dtype=torch.long, device=device)
    position_ids = torch.tensor(positions + positions[-1:] * copies, dtype=torch.long, device=device)
    # Where each row's keys and values go, in one layer's cache seen as (slot, head, position) x head_dim: an idle
    # row's into the spare slot, or (without one) nowhere, the live rows then picked out of each layer's.
    if len(live) == len(row_slots) or cache.spare_slot is not None:
        written = [(slot if slot in tokens else cache.spare_slot, positions[row]) for row, slot in enumerate(row_slots)]
        live_rows = None
    else:
        written = [(slot, positions[row]) for row, slot in live]
        live_rows = torch.tensor([row for row, _ in live], device=device)
    cache_rows = torch.tensor(
        [(slot * heads + head) * positions_per_slot + position for slot, position in written for head in range(heads)],
        dtype=torch.long, device=device,
    )
    ends = {slot: cache.lengths[slot] + 1 for _, slot in live}
    runs = _attention_runs(
        [(row, slot, _attended_positions(ends[slot], attention_bucket, positions_per_slot)) for row, slot in live],
        len(row_slots),
    )
    masks = _padding_masks(cache, runs, row_slots, ends) if attention_bucket is not None else [None] * len(runs)
    x = model.embed(token_ids, position_ids)
    placed = model.attention_positions(position_ids)

    def attend(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Write the rows' keys and values into their slots; each row's attention over its own cached positions."""
        if copies:
            k, v = k[:count], v[:count]
        if live_rows is not None:
            k, v = k[live_rows], v[live_rows]
        # `to`: under autocast (samples during training) the products come out in bf16 over an fp32 cache.
        cache.keys[layer].view(-1, head_dim).index_copy_(0, cache_rows, k.reshape(-1, head_dim).to(cache.keys.dtype))
        cache.values[layer].view(-1, head_dim).index_copy_(0, cache_rows, v.reshape(-1, head_dim).to(cache.values.dtype))
        q = q.reshape(count + copies, heads, 1, head_dim)
        keys, values = cache.keys[layer], cache.values[layer]
        outputs = [
            q[row : row + size] if end == 0 else F.scaled_dot_product_attention(  # idle rows keep their query as filler
                q[row : row + size], keys[slot : slot + size, :, :end], values[slot : slot + size, :, :end], attn_mask=mask
            )
            for (row, slot, size, end), mask in zip(runs, masks)
        ]
        if copies:
            outputs.append(outputs[-1][-1:].expand(copies, -1, -1, -1))
        attended = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
        return attended.view(count + copies, width)

    block_forward = model.block_forward
    for layer, block in enumerate(model.blocks(chunk)):
        x = block_forward(x, block, functools.partial(attend, layer), placed)
    for _, slot in live:
        cache.lengths[slot] += 1
    logits = model.head(model.final_norm(x), chunk)
    return {slot: logits[row] for row, slot in live}


def _attended_positions(length: int, bucket: Optional[int], max_length: int) -> int:
    """The positions a row of `length` attends over: exactly those, or rounded up to the bucket (within the cache)."""
    if bucket is None:
        return length
    return min(-(-length // bucket) * bucket, max_length)


def _padding_masks(
    cache: BatchedKVCache, runs: list[tuple[int, int, int, int]], row_slots: list[int], ends: dict[int, int]
) -> list[Optional[torch.Tensor]]:
    """Each run's additive mask, (rows, 1, 1, positions): its rows see their own positions, not the padding past them.
    Built once per step, shared by every layer."""
    table = cache.padding_masks
    masks: list[Optional[torch.Tensor]] = []
    for row, _, size, end in runs:
        if end == 0:
            masks.append(None)
        elif size == 1:
            length = ends[row_slots[row]]
            masks.append(table[length : length + 1, :end].view(1, 1, 1, end))
        else:
            lengths = torch.tensor([ends[slot] for slot in row_slots[row : row + size]], device=table.device)
            masks.append(table[lengths, :end].view(size, 1, 1, end))
    return masks


def _attention_runs(attended: list[tuple[int, int, int]], rows: int) -> list[tuple[int, int, int, int]]:
    """The step's rows as runs of (first row, first slot, rows, positions to attend; 0 for idle rows).

    Neighbouring rows in neighbouring slots that attend over as many positions share one attention call: each
    row's numbers are those of a call of its own (the kernel treats every row and head alone; the startup probe's
    steps, all of one length, would show otherwise), and one call costs a quarter of eight.
    """
    runs: list[tuple[int, int, int, int]] = []
    next_row = 0
    for row, slot, end in attended:
        if row > next_row:
            runs.append((next_row, -1, row - next_row, 0))
        last = runs[-1] if runs else None
        if last is not None and last[3] == end and last[0] + last[2] == row and last[1] + last[2] == slot:
            runs[-1] = (last[0], last[1], last[2] + 1, end)
        else:
            runs.append((row, slot, 1, end))
        next_row = row + 1
    if rows > next_row:
        runs.append((next_row, -1, rows - next_row, 0))
    return runs
