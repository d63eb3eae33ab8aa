"""Batched decoding steps whose rows never depend on each other: the batched KV cache, one step, and its layout.

A sequence's numbers must not depend on its neighbours, so that greedy decoding gives the same text alone or
beside others. Attention runs row by row over exactly that row's cached positions (a padded, masked attention
would sum in another order). The matrix products are the hard part: CPU kernels pick their blocking (or a
matrix-vector kernel for one row) by the number of rows, and some sum in another order for another count. So a
step follows a `StepLayout` measured on the machine at startup: either one product over all of the step's rows,
padded up to the fewest rows from which every row comes out the same, or products of exactly a few rows each
(every row then always meets the same kernel); the probe keeps whichever decodes faster.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from hellogpt.model.gpt import GPT

# Decoding steps timed per candidate layout at startup (after one warm-up step): enough for a stable median.
LAYOUT_TIMING_STEPS = 5
# Row counts tried as fixed-size products; 1 (a matrix-vector kernel) and 2 are the cheapest on every CPU seen.
CHUNK_CANDIDATES = (1, 2)
# The probe's sequences: this many tokens already in every slot's cache.
PROBE_CONTEXT_LENGTH = 4


@dataclass(frozen=True)
class StepLayout:
    """How a step groups its rows for the matrix products, so that each row's numbers are the same in any batch.

    `chunk` None: one product over all of the step's rows, at least `min_rows` of them (idle slots pad up to it).
    `chunk` k: products of exactly k rows each; the step's rows are padded up to a multiple of k.
    """

    chunk: Optional[int]
    min_rows: int

    def describe(self) -> str:
        if self.chunk is None:
            return f"one product per step of at least {self.min_rows} row{'s' if self.min_rows > 1 else ''}"
        return f"products of {self.chunk} row{'s' if self.chunk > 1 else ''}"


class BatchedKVCache:
    """Keys and values of every layer for `slots` sequences of up to `block_size` positions, each with its length."""

    def __init__(self, model: GPT, slots: int) -> None:
        config = model.config
        weight = model.transformer.wte.weight
        shape = (config.n_layer, slots, config.n_head, config.block_size, config.head_dim)
        self.keys = torch.zeros(shape, device=weight.device, dtype=weight.dtype)
        self.values = torch.zeros(shape, device=weight.device, dtype=weight.dtype)
        self.lengths = [0] * slots


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
    cache.lengths[slot] = len(context)
    return logits


class DecodingModel:
    """A model's layers as plain callables for the per-token path: one step runs about 120 small operations, and
    looking up each module and parameter through `nn.Module` every time would cost a sixth of the step.

    Built once per served model (after any packing or quantisation). Dropout is left out: serving is evaluation.
    """

    def __init__(self, model: GPT) -> None:
        self.model = model
        self.config = model.config
        transformer = model.transformer
        self.token_embedding = transformer.wte.weight
        self.position_embedding = transformer.wpe.weight
        self.blocks = [
            _BlockCalls(
                ln_1=_layer_norm(block.ln_1), qkv=_Linear(block.attn.c_attn), projection=_Linear(block.attn.c_proj),
                ln_2=_layer_norm(block.ln_2), up=_Linear(block.mlp.c_fc), down=_Linear(block.mlp.c_proj),
                activation=block.mlp.activation,
            )
            for block in transformer.h
        ]
        self.ln_f = _layer_norm(transformer.ln_f)
        self.head = _Linear(model.lm_head)


Rows = Callable[[torch.Tensor], torch.Tensor]


class _Linear:
    """One linear layer of the decoding path, applied in one product or in products of exactly `chunk` rows each.

    A plain `nn.Linear` runs as `F.linear` on its tensors, and several fixed-size products as one batched product
    over a broadcast weight (as cheap as one product, and the same numbers as separate ones: the probe checks);
    any other kind (packed, int8) runs through its own forward, chunk by chunk.
    """

    def __init__(self, layer: nn.Module) -> None:
        self._forward: Optional[Rows] = None if type(layer) is nn.Linear else layer.forward
        self._weight, self._bias = (layer.weight, layer.bias) if self._forward is None else (None, None)

    def __call__(self, rows: torch.Tensor, chunk: Optional[int]) -> torch.Tensor:
        if self._forward is not None:
            if chunk is None or rows.size(0) == chunk:
                return self._forward(rows)
            return torch.cat([self._forward(part) for part in rows.split(chunk)])
        if chunk is None or rows.size(0) == chunk:
            return F.linear(rows, self._weight, self._bias)
        groups = rows.size(0) // chunk
        weight = self._weight.T.expand(groups, *self._weight.T.shape)
        grouped = rows.reshape(groups, chunk, rows.size(1))
        products = torch.bmm(grouped, weight) if self._bias is None else torch.baddbmm(self._bias, grouped, weight)
        return products.view(rows.size(0), -1)


@dataclass(frozen=True)
class _BlockCalls:
    ln_1: Rows
    qkv: _Linear
    projection: _Linear
    ln_2: Rows
    up: _Linear
    down: _Linear
    activation: Rows


def _layer_norm(layer: nn.LayerNorm) -> Rows:
    shape, weight, bias, eps = layer.normalized_shape, layer.weight, layer.bias, layer.eps
    return lambda rows: F.layer_norm(rows, shape, weight, bias, eps)


@torch.inference_mode()
def decode_step(
    model: DecodingModel, cache: BatchedKVCache, tokens: dict[int, int], rows: Optional[Sequence[int]] = None,
    chunk: Optional[int] = None,
) -> dict[int, torch.Tensor]:
    """Feed one token to each slot in `tokens` (slot -> token), each at its own next position; logits by slot.

    `rows` are the slots computed as rows of the step (default: every slot, idle ones as padding thrown away);
    `chunk` splits the matrix products into calls of that many rows (see `StepLayout`). Computes what
    `GPT.forward` does, one position per row.
    """
    row_slots = list(rows) if rows is not None else list(range(len(cache.lengths)))
    device = cache.keys.device
    config = model.config
    width, heads, head_dim, block_size = config.n_embd, config.n_head, config.head_dim, config.block_size
    live = [(row, slot) for row, slot in enumerate(row_slots) if slot in tokens]
    positions = [cache.lengths[slot] if slot in tokens else 0 for slot in row_slots]
    token_ids = torch.tensor([tokens.get(slot, 0) for slot in row_slots], dtype=torch.long, device=device)
    position_ids = torch.tensor(positions, dtype=torch.long, device=device)
    # Where each live row's keys and values go: rows of one layer's cache seen as (slot, head, position) x head_dim.
    cache_rows = torch.tensor(
        [(slot * heads + head) * block_size + positions[row] for row, slot in live for head in range(heads)],
        dtype=torch.long, device=device,
    )
    live_rows = None if len(live) == len(row_slots) else torch.tensor([row for row, _ in live], device=device)
    runs = _attention_runs([(row, slot, cache.lengths[slot] + 1) for row, slot in live], len(row_slots))
    x = F.embedding(token_ids, model.token_embedding) + F.embedding(position_ids, model.position_embedding)
    for layer, block in enumerate(model.blocks):
        q, k, v = block.qkv(block.ln_1(x), chunk).split(width, dim=1)
        if live_rows is not None:
            k, v = k[live_rows], v[live_rows]
        cache.keys[layer].view(-1, head_dim).index_copy_(0, cache_rows, k.reshape(-1, head_dim))
        cache.values[layer].view(-1, head_dim).index_copy_(0, cache_rows, v.reshape(-1, head_dim))
        q = q.reshape(len(row_slots), heads, 1, head_dim)
        keys, values = cache.keys[layer], cache.values[layer]
        outputs = [
            q[row : row + count] if end == 0 else F.scaled_dot_product_attention(  # idle rows keep their query as filler
                q[row : row + count], keys[slot : slot + count, :, :end], values[slot : slot + count, :, :end]
            )
            for row, slot, count, end in runs
        ]
        x = x + block.projection(torch.cat(outputs).view(len(row_slots), width), chunk)
        x = x + block.down(block.activation(block.up(block.ln_2(x), chunk)), chunk)
    for _, slot in live:
        cache.lengths[slot] += 1
    logits = model.head(model.ln_f(x), chunk)
    return {slot: logits[row] for row, slot in live}


def _attention_runs(attended: list[tuple[int, int, int]], rows: int) -> list[tuple[int, int, int, int]]:
    """The step's rows as runs of (first row, first slot, rows, positions to attend; 0 for idle rows).

    Neighbouring rows in neighbouring slots with the same length share one attention call: each row's numbers
    are those of a call of its own (the kernel treats every row and head alone; the startup probe's steps, all
    of one length, would show otherwise), and one call costs a quarter of eight. Rows of other lengths are never
    padded together: a masked, longer attention sums in another order.
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


def step_rows(live_slots: Sequence[int], slots: int, layout: StepLayout) -> list[int]:
    """The slots a step computes: the live ones, topped up with idle slots to the layout's rows."""
    rows = sorted(live_slots)
    wanted = max(len(rows), layout.min_rows)
    if layout.chunk is not None:
        wanted = -(-wanted // layout.chunk) * layout.chunk
    idle = (slot for slot in range(slots) if slot not in live_slots)
    while len(rows) < min(wanted, slots):
        rows.append(next(idle))
    return sorted(rows)


@torch.inference_mode()
def batch_invariant_row_floor(model: DecodingModel, max_batch: int) -> Optional[int]:
    """The fewest rows a one-product step may compute while every row's logits stay bit-identical, whatever the
    step's size (from there up to `max_batch`) and the row's place in it; None when even `max_batch` rows differ
    by place. Each trial fills every row with the same sequence: any row that differs shows up, wherever it sits.
    """
    cache = _probe_cache(model, max_batch)
    reference: Optional[torch.Tensor] = None
    floor: Optional[int] = None
    for rows in range(max_batch, 0, -1):
        logits = _probe_step(model, cache, rows, chunk=None)
        reference = logits[0] if reference is None else reference
        if any(not torch.equal(row_logits, reference) for row_logits in logits.values()):
            break
        floor = rows
    return floor


@torch.inference_mode()
def chunk_keeps_rows_alike(model: DecodingModel, chunk: int, max_batch: int) -> bool:
    """Whether products of `chunk` rows (a divisor of `max_batch`) give every row the same logits wherever it sits,
    in a step of any size."""
    cache = _probe_cache(model, max_batch)
    reference: Optional[torch.Tensor] = None
    for rows in range(max_batch, 0, -chunk):
        logits = _probe_step(model, cache, rows, chunk=chunk)
        reference = logits[0] if reference is None else reference
        if any(not torch.equal(row_logits, reference) for row_logits in logits.values()):
            return False
    return True


def measure_step_layout(model: DecodingModel, max_batch: int) -> StepLayout:
    """The layout that keeps every row the same in any batch and decodes fastest here, timed on the model itself.

    Candidates: one product padded to the measured floor, and products of 1 or 2 rows (that divide `max_batch`,
    so that a full step splits evenly). A floor of 1 or 2 wins outright (a 2-row product costs what a 1-row one
    does); otherwise each candidate is timed on a step with one live sequence and on a full step, and the one whose worse
    ratio to the fastest candidate of each kind is smallest is kept.
    """
    candidates: list[StepLayout] = []
    floor = batch_invariant_row_floor(model, max_batch)
    if floor is not None:
        candidates.append(StepLayout(chunk=None, min_rows=floor))
    if floor is None or floor > max(CHUNK_CANDIDATES):
        candidates += [
            StepLayout(chunk=chunk, min_rows=chunk) for chunk in CHUNK_CANDIDATES
            if max_batch % chunk == 0 and chunk_keeps_rows_alike(model, chunk, max_batch)
        ]
    if len(candidates) <= 1:  # one row per product meets one kernel only: the layout of last resort
        return candidates[0] if candidates else StepLayout(chunk=1, min_rows=1)
    timings = {layout: _lone_and_full_step_seconds(model, layout, max_batch) for layout in candidates}
    fastest_lone = min(lone for lone, _ in timings.values())
    fastest_full = min(full for _, full in timings.values())
    # The layout never far behind the best, for one request as for a full batch.
    return min(candidates, key=lambda layout: max(timings[layout][0] / fastest_lone, timings[layout][1] / fastest_full))


def _lone_and_full_step_seconds(model: DecodingModel, layout: StepLayout, max_batch: int) -> tuple[float, float]:
    cache = _probe_cache(model, max_batch)
    lone = _median_step_seconds(model, cache, step_rows([0], max_batch, layout), layout.chunk, live=1)
    full = _median_step_seconds(model, cache, step_rows(range(max_batch), max_batch, layout), layout.chunk, live=max_batch)
    return lone, full


def _median_step_seconds(model: DecodingModel, cache: BatchedKVCache, rows: list[int], chunk: Optional[int], live: int) -> float:
    timings = []
    for _ in range(LAYOUT_TIMING_STEPS + 1):
        started = time.perf_counter()
        decode_step(model, cache, {slot: 1 for slot in rows[:live]}, rows=rows, chunk=chunk)
        timings.append(time.perf_counter() - started)
        cache.lengths = [PROBE_CONTEXT_LENGTH] * len(cache.lengths)
    return statistics.median(timings[1:])


def _probe_cache(model: DecodingModel, slots: int) -> BatchedKVCache:
    """A cache whose every slot holds the same short context."""
    cache = BatchedKVCache(model.model, slots)
    context = [index % model.config.vocab_size for index in range(1, PROBE_CONTEXT_LENGTH + 1)]
    for slot in range(slots):
        prefill_slot(model.model, cache, slot, context)
    return cache


def _probe_step(model: DecodingModel, cache: BatchedKVCache, rows: int, chunk: Optional[int]) -> dict[int, torch.Tensor]:
    """One step feeding the same token to the first `rows` slots; the cache is rewound after it."""
    logits = decode_step(model, cache, {slot: 1 for slot in range(rows)}, rows=range(rows), chunk=chunk)
    cache.lengths = [PROBE_CONTEXT_LENGTH] * len(cache.lengths)
    return logits
