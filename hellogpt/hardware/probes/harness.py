"""The one timing harness of every probe: medians of rounds that alternate between the candidates, on one clock.

A probe runs on a machine that other work may share: a median shrugs off a slow round, and rounds that alternate
between the candidates let a moment of load (a server's own start-up, say) slow them alike instead of deciding.
`clock` is the only clock a probe reads; tests replace it (`monkeypatch.setattr(harness, "clock", fake)`), so no
probe test compares real sleeps with a margin.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from typing import Callable, TypeVar

Candidate = TypeVar("Candidate")

clock: Callable[[], float] = time.perf_counter


def seconds_of(run: Callable[[], object]) -> float:
    """Wall seconds of one call of `run`."""
    started = clock()
    run()
    return clock() - started


def median_seconds(run: Callable[[], object], rounds: int) -> float:
    """Median seconds of `rounds` calls of `run`, after one warm-up call (kernel selection, first-touch memory)."""
    run()
    return statistics.median(seconds_of(run) for _ in range(rounds))


def median_step_seconds(step: Callable[[], object], min_steps: int, min_seconds: float = 0.0) -> float:
    """Median seconds of one `step`, over at least `min_steps` steps and `min_seconds` in all, after one warm-up
    step: steps of a small model take a fraction of a millisecond, and a handful of them is noise."""
    step()
    timings: list[float] = []
    started = clock()
    while len(timings) < min_steps or clock() - started < min_seconds:
        timings.append(seconds_of(step))
    return statistics.median(timings)


def alternating_medians(candidates: Mapping[Candidate, Callable[[], float]], rounds: int) -> dict[Candidate, float]:
    """Each candidate's median of `rounds` measurements (seconds, or any cost), the rounds alternating between them."""
    measured: dict[Candidate, list[float]] = {candidate: [] for candidate in candidates}
    for _ in range(rounds):
        for candidate, measure in candidates.items():
            measured[candidate].append(measure())
    return {candidate: statistics.median(values) for candidate, values in measured.items()}


def best_seconds(run: Callable[[], object], budget_seconds: float) -> float:
    """The shortest of as many calls of `run` as fit in `budget_seconds` (after a warm-up call): for a peak rate,
    where the best call is the one that other work disturbed least."""
    run()
    best = seconds_of(run)
    started = clock()
    while clock() - started < budget_seconds:
        best = min(best, seconds_of(run))
    return best
