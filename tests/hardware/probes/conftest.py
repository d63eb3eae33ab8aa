"""The probes' own tests: they may measure (the suite keeps every other test to `HELLOGPT_MEASURE=off`), on a fake
clock wherever a timing decides something, and never beside the user's cache."""

from __future__ import annotations

import pytest

from hellogpt.hardware.probes import MEASURE_ENV, harness, packing, peak
from hellogpt.hardware.probes.cache import CpuUseByOthers


class FakeClock:
    """A clock that moves by what a probe's candidates `advance` it (what they are meant to cost), plus one `tick`
    per reading, so that a probe's "at least so many seconds" loop ends whatever it times."""

    def __init__(self, tick: float = 1e-6) -> None:
        self.now = 0.0
        self.tick = tick
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        self.now += self.tick
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def measuring_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MEASURE_ENV, raising=False)


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock()
    monkeypatch.setattr(harness, "clock", clock)
    return clock


class _QuietMachine(CpuUseByOthers):
    def __exit__(self, *_: object) -> None:
        self.cores = 0.0


@pytest.fixture
def quiet_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Probes see no other work on the machine, whatever else runs beside the tests: their results are cached."""
    monkeypatch.setattr(packing, "CpuUseByOthers", _QuietMachine)
    monkeypatch.setattr(peak, "CpuUseByOthers", _QuietMachine)
