"""Decides whether decoding runs on all of torch's threads or on one; a rule would not do, because where waking the
other threads for a small model's tiny products stops paying depends on the CPU and OpenMP's wait policy.

A token of a small model is a few dozen tiny matrix products, where waking the other threads costs more than they
save (the quickstart shape decodes 3.4x faster on one thread of a 2-core Xeon); a large model is bound by memory
reads, which more threads stream faster. So the probe times the caller's own decoding step each way, and skips
timing one thread when a step is long enough to be bound by memory (then the probe would only cost time). With
`system.measure: off` torch's threads stay as they are (one per physical core unless OMP_NUM_THREADS says otherwise).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from hellogpt.hardware.probes import measuring
from hellogpt.hardware.probes.harness import alternating_medians, median_step_seconds

# Steps timed at least per measurement, and the step time from which a model is taken to be bound by memory reads.
THREAD_PROBE_STEPS = 5
THREAD_PROBE_MAX_STEP_SECONDS = 0.02
# Small models' steps are short and noisy: each way is timed for about this long in all, in alternating rounds.
THREAD_PROBE_SECONDS = 0.12
THREAD_PROBE_ROUNDS = 3


def choose_threads(step: Callable[[], object], measure: Optional[str] = None) -> int:
    """Set torch's intra-op threads to whichever runs `step` (one decoding step, repeatable) faster here, all of
    them or one, and return the count; under `system.measure: off` leave them as they are."""
    available = torch.get_num_threads()
    if available == 1 or not measuring(measure):
        return available
    if median_step_seconds(step, THREAD_PROBE_STEPS) >= THREAD_PROBE_MAX_STEP_SECONDS:
        return available

    def on(threads: int) -> Callable[[], float]:
        def measure_step() -> float:
            torch.set_num_threads(threads)
            return median_step_seconds(step, THREAD_PROBE_STEPS, THREAD_PROBE_SECONDS / THREAD_PROBE_ROUNDS)

        return measure_step

    medians = alternating_medians({available: on(available), 1: on(1)}, THREAD_PROBE_ROUNDS)
    chosen = 1 if medians[1] < medians[available] else available
    torch.set_num_threads(chosen)
    return chosen
