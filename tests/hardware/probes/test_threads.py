"""The decoding-thread probe, on a fake clock: the thread count whose step the clock reads faster is kept."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from hellogpt.hardware.probes import threads
from tests.hardware.probes.conftest import FakeClock


@pytest.fixture
def available() -> Iterator[int]:
    count = torch.get_num_threads()
    if count == 1:
        pytest.skip("one intra-op thread here: nothing to choose")
    yield count
    torch.set_num_threads(count)


def step_costing(clock: FakeClock, seconds_by_threads: dict[int, float]):
    return lambda: clock.advance(seconds_by_threads[torch.get_num_threads()])


def test_one_thread_is_kept_where_its_steps_are_faster(available: int, fake_clock: FakeClock) -> None:
    step = step_costing(fake_clock, {available: 0.004, 1: 0.001})
    assert threads.choose_threads(step) == 1 and torch.get_num_threads() == 1


def test_all_threads_are_kept_where_their_steps_are_faster(available: int, fake_clock: FakeClock) -> None:
    step = step_costing(fake_clock, {available: 0.001, 1: 0.004})
    assert threads.choose_threads(step) == available and torch.get_num_threads() == available


def test_a_memory_bound_step_keeps_every_thread_without_trying_one(available: int, fake_clock: FakeClock) -> None:
    step = step_costing(fake_clock, {available: 0.5})  # one thread's step would raise KeyError if it were tried
    assert threads.choose_threads(step) == available


def test_off_keeps_the_threads_and_times_nothing(available: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "median_step_seconds", pytest.fail)
    assert threads.choose_threads(pytest.fail, measure="off") == available
    monkeypatch.setenv("HELLOGPT_MEASURE", "off")
    assert threads.choose_threads(pytest.fail) == available
