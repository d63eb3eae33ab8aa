"""The server's row-layout probe, on a fake clock: the least time per token alone plus per token of a full batch."""

from __future__ import annotations

import pytest

from hellogpt.hardware.probes.layout import fastest_layout
from tests.hardware.probes.conftest import FakeClock

MAX_BATCH = 8


def costing(clock: FakeClock, seconds: dict[str, float]):
    return lambda layout: clock.advance(seconds[layout])


@pytest.mark.parametrize(
    ("full_seconds_of_rows", "expected"),
    [
        (0.008, "rows"),  # padded: 2 + 2/8 = 2.25 ms per token; rows: 1 + 8/8 = 2 ms
        (0.016, "padded"),  # rows: 1 + 16/8 = 3 ms
    ],
)
def test_the_layout_cheapest_per_token_alone_and_in_a_full_batch_is_kept(
    fake_clock: FakeClock, full_seconds_of_rows: float, expected: str
) -> None:
    lone = costing(fake_clock, {"padded": 0.002, "rows": 0.001})
    full = costing(fake_clock, {"padded": 0.002, "rows": full_seconds_of_rows})
    assert fastest_layout(["padded", "rows"], lone, full, MAX_BATCH) == expected


def test_off_or_a_single_candidate_takes_the_first_and_times_nothing(
    fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert fastest_layout(["padded", "rows"], pytest.fail, pytest.fail, MAX_BATCH, measure="off") == "padded"
    assert fastest_layout(["rows"], pytest.fail, pytest.fail, MAX_BATCH) == "rows"
    monkeypatch.setenv("HELLOGPT_MEASURE", "off")
    assert fastest_layout(["padded", "rows"], pytest.fail, pytest.fail, MAX_BATCH) == "padded"
    assert fake_clock.reads == 0
