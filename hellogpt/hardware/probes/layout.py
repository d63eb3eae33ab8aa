"""Decides which of the server's batch-invariant row layouts decodes fastest here; a rule would not do, because how
a one-row product, a two-row one and a padded full one compare depends on the CPU's kernels and the model's width.

The caller (`hellogpt.serve.steps`) lists the layouts that keep every row's numbers the same in any batch (found by
comparing logits, not by timing) in the order its rule prefers them; this probe only times them. With
`system.measure: off`, or a single candidate, the first one is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable, Optional, TypeVar

from hellogpt.hardware.probes import measuring
from hellogpt.hardware.probes.harness import alternating_medians, median_step_seconds

Layout = TypeVar("Layout")

# Decoding steps timed per candidate and step size (after one warm-up step), and at least this long: steps of a
# small model take a fraction of a millisecond, and a handful of them is noise. Medians of a few rounds.
LAYOUT_TIMING_STEPS = 5
LAYOUT_TIMING_SECONDS = 0.02
LAYOUT_TIMING_ROUNDS = 3


def fastest_layout(
    candidates: Sequence[Layout],
    lone_step: Callable[[Layout], object],
    full_step: Callable[[Layout], object],
    max_batch: int,
    measure: Optional[str] = None,
) -> Layout:
    """The candidate with the least seconds per token of a request alone (`lone_step`) plus per token of a full
    batch of `max_batch` (`full_step`); the first candidate without measuring or without a choice."""
    if not candidates:
        raise ValueError("no layout to choose from")
    if len(candidates) == 1 or not measuring(measure):
        return candidates[0]

    def cost(layout: Layout) -> Callable[[], float]:
        def seconds_per_token() -> float:
            lone = median_step_seconds(lambda: lone_step(layout), LAYOUT_TIMING_STEPS, LAYOUT_TIMING_SECONDS)
            full = median_step_seconds(lambda: full_step(layout), LAYOUT_TIMING_STEPS, LAYOUT_TIMING_SECONDS)
            return lone + full / max_batch

        return seconds_per_token

    medians = alternating_medians({layout: cost(layout) for layout in candidates}, LAYOUT_TIMING_ROUNDS)
    return min(candidates, key=lambda layout: medians[layout])
