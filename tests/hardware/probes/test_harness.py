"""The one timing harness, on a fake clock: medians, alternating rounds, step loops and best-of budgets."""

from __future__ import annotations

import pytest

from hellogpt.hardware.probes import harness, measuring
from tests.hardware.probes.conftest import FakeClock


def costing(clock: FakeClock, seconds: list[float]):
    """A run whose calls take `seconds` in turn (the first is the warm-up)."""
    remaining = iter(seconds)
    return lambda: clock.advance(next(remaining))


def test_median_seconds_skips_the_warm_up_and_shrugs_off_a_slow_round(fake_clock: FakeClock) -> None:
    run = costing(fake_clock, [9.0, 1.0, 5.0, 2.0])
    assert harness.median_seconds(run, rounds=3) == pytest.approx(2.0 + fake_clock.tick)


def test_step_medians_run_at_least_the_steps_and_the_seconds_asked(fake_clock: FakeClock) -> None:
    calls = []

    def step() -> None:
        calls.append(1)
        fake_clock.advance(0.01)

    assert harness.median_step_seconds(step, min_steps=3) == pytest.approx(0.01 + fake_clock.tick)
    assert len(calls) == 1 + 3
    calls.clear()
    harness.median_step_seconds(step, min_steps=3, min_seconds=0.1)
    assert 1 + 9 <= len(calls) <= 1 + 11  # ten steps of 10 ms fill 0.1 s


def test_rounds_alternate_between_the_candidates(fake_clock: FakeClock) -> None:
    order: list[str] = []

    def candidate(name: str, seconds: float):
        def measure() -> float:
            order.append(name)
            return seconds

        return measure

    medians = harness.alternating_medians({"a": candidate("a", 2.0), "b": candidate("b", 1.0)}, rounds=3)
    assert order == ["a", "b"] * 3
    assert medians == {"a": 2.0, "b": 1.0}


def test_best_seconds_keeps_the_fastest_call_within_the_budget(fake_clock: FakeClock) -> None:
    run = costing(fake_clock, [1.0, 0.3, 0.2, 0.5] + [0.4] * 100)
    assert harness.best_seconds(run, budget_seconds=1.5) == pytest.approx(0.2 + fake_clock.tick)


def test_measuring_is_auto_unless_the_setting_or_the_environment_says_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert measuring(None) and measuring("auto")
    assert not measuring("off")
    monkeypatch.setenv("HELLOGPT_MEASURE", "off")
    assert not measuring("auto") and not measuring(None)
