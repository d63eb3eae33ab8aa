"""How the server's batched steps lay out their rows, so that no row's numbers depend on the others'.

A sequence's numbers must not depend on its neighbours, so that greedy decoding gives the same text alone or
beside others. Attention does not mix rows (`hellogpt.decode.step`): every row attends over its length rounded
up to `ATTENTION_BUCKET` positions, masked, alone or not, so that requests that arrived a few steps apart (their
lengths differ) still share one attention call per layer instead of one each. The matrix products are the
hard part: CPU kernels pick their blocking (or a matrix-vector kernel for one row) by the number of rows, and
some sum in another order for another count. So a step follows a `StepLayout` chosen on the machine at
startup: either one product over all of the step's rows, padded up to the fewest rows from which every row comes
out the same, or products of exactly a few rows each (every row then always meets the same kernel). Which ones keep
rows alike is found here by comparing logits; which of those decodes faster is timed by
`hellogpt.hardware.probes.layout` (under `system.measure: off`, the first of them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import torch

from hellogpt.decode.cache import BatchedKVCache, prefill_slot
from hellogpt.decode.step import DecodingModel, decode_step
from hellogpt.hardware.probes.layout import fastest_layout

# Row counts tried as fixed-size products; 1 (a matrix-vector kernel) and 2 are the cheapest on every CPU seen.
CHUNK_CANDIDATES = (1, 2)
# The probe's sequences: this many tokens already in every slot's cache.
PROBE_CONTEXT_LENGTH = 4
# Positions a step's attention rounds each row's length up to. Eight requests admitted over a few steps attend
# in one call instead of eight (on the 4x128 char model, 1.2 ms per step instead of 1.6), at the price of a mask
# (about 2 us per call) and up to 63 padded positions (for GPT-2-124M at most 5 MB more read per row and step,
# against 500 MB of weights).
ATTENTION_BUCKET = 64


@dataclass(frozen=True)
class StepLayout:
    """How a step groups its rows for the matrix products, so that each row's numbers are the same in any batch.

    `chunk` None: one product over all of the step's rows, at least `min_rows` of them (idle slots pad up to it).
    `chunk` k: products of exactly k rows each (a product short of rows repeats its last one); `min_rows` is 1.
    """

    chunk: Optional[int]
    min_rows: int

    def describe(self) -> str:
        if self.chunk is None:
            return f"one product per step of at least {self.min_rows} row{'s' if self.min_rows > 1 else ''}"
        return f"products of {self.chunk} row{'s' if self.chunk > 1 else ''}"


def step_rows(live_slots: Sequence[int], slots: int, layout: StepLayout) -> list[int]:
    """The slots a step computes: the live ones, topped up with idle slots to the layout's fewest rows (products
    of a fixed size top themselves up)."""
    rows = sorted(live_slots)
    if len(rows) >= layout.min_rows:
        return rows
    wanted = layout.min_rows
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
    """Whether products of `chunk` rows give every row the same logits wherever it sits, in a step of any size."""
    cache = _probe_cache(model, max_batch)
    reference: Optional[torch.Tensor] = None
    for rows in range(max_batch, 0, -1):
        logits = _probe_step(model, cache, rows, chunk=chunk)
        reference = logits[0] if reference is None else reference
        if any(not torch.equal(row_logits, reference) for row_logits in logits.values()):
            return False
    return True


def measure_step_layout(model: DecodingModel, max_batch: int, measure: Optional[str] = None) -> StepLayout:
    """The layout that keeps every row the same in any batch and decodes fastest here (`measure`: system.measure).

    Candidates, in the order the rule prefers them: one product padded to the measured floor, then products of 1 or
    2 rows. A floor of 1 or 2 wins outright (a 2-row product costs what a 1-row one does); otherwise the probe times
    each on a step with one live sequence and on a full step.
    """
    candidates: list[StepLayout] = []
    floor = batch_invariant_row_floor(model, max_batch)
    if floor is not None:
        candidates.append(StepLayout(chunk=None, min_rows=floor))
    if floor is None or floor > max(CHUNK_CANDIDATES):
        candidates += [
            StepLayout(chunk=chunk, min_rows=1) for chunk in CHUNK_CANDIDATES
            if chunk_keeps_rows_alike(model, chunk, max_batch)
        ]
    if not candidates:  # one row per product meets one kernel only: the layout of last resort
        return StepLayout(chunk=1, min_rows=1)
    cache = _probe_cache(model, max_batch)
    return fastest_layout(
        candidates,
        lone_step=lambda layout: _layout_step(model, cache, layout, live=1, max_batch=max_batch),
        full_step=lambda layout: _layout_step(model, cache, layout, live=max_batch, max_batch=max_batch),
        max_batch=max_batch,
        measure=measure,
    )


def _layout_step(model: DecodingModel, cache: BatchedKVCache, layout: StepLayout, live: int, max_batch: int) -> None:
    """One step of `live` sequences laid out as `layout`; the cache is rewound after it."""
    rows = step_rows(range(live), max_batch, layout)
    decode_step(
        model, cache, {slot: 1 for slot in rows[:live]}, rows=rows, chunk=layout.chunk, attention_bucket=ATTENTION_BUCKET
    )
    cache.lengths = [PROBE_CONTEXT_LENGTH] * len(cache.lengths)


def _probe_cache(model: DecodingModel, slots: int) -> BatchedKVCache:
    """A cache whose every slot holds the same short context."""
    cache = BatchedKVCache(model.model, slots, spare_slot=True)  # as the scheduler's
    context = [index % model.config.vocab_size for index in range(1, PROBE_CONTEXT_LENGTH + 1)]
    for slot in range(slots):
        prefill_slot(model.model, cache, slot, context)
    return cache


def _probe_step(model: DecodingModel, cache: BatchedKVCache, rows: int, chunk: Optional[int]) -> dict[int, torch.Tensor]:
    """One step feeding the same token to the first `rows` slots; the cache is rewound after it."""
    logits = decode_step(
        model, cache, {slot: 1 for slot in range(rows)}, rows=range(rows), chunk=chunk, attention_bucket=ATTENTION_BUCKET
    )
    cache.lengths = [PROBE_CONTEXT_LENGTH] * len(cache.lengths)
    return logits
