"""The probes' one cache: where it lives, and when a probe's result is not kept (other work took its cores)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
import torch

from hellogpt.hardware.probes import cache
from hellogpt.hardware.probes.cache import (
    CpuUseByOthers, cache_file, probe_was_disturbed, read_json, write_json_atomically,
)
from tests.hardware.probes.conftest import FakeClock


def test_the_cache_lives_under_xdg_cache_home_and_survives_corruption(cache_home: Path) -> None:
    path = cache_file("probe.json")
    assert path == cache_home / "hellogpt" / "probe.json"
    assert read_json(path) == {}
    write_json_atomically(path, {"key": 1.5})
    assert read_json(path) == {"key": 1.5}
    path.write_text("[1, 2")
    assert read_json(path) == {}


def test_the_cores_other_work_kept_busy_are_the_machines_busy_time_less_ours(
    fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """psutil's counters and the clock are scripted: 3 s of the machine's busy time in 1 s, 1 s of it ours."""
    machine = iter([SimpleNamespace(user=10.0, system=2.0), SimpleNamespace(user=12.0, system=3.0)])
    own = iter([SimpleNamespace(user=4.0, system=0.0), SimpleNamespace(user=5.0, system=0.0)])
    monkeypatch.setattr(psutil, "cpu_times", lambda: next(machine))
    monkeypatch.setattr(psutil.Process, "cpu_times", lambda self: next(own))
    monkeypatch.setattr(cache, "_clock_ticks_per_second", lambda: 10**9)  # no counter resolution to allow for
    with CpuUseByOthers() as others:
        fake_clock.advance(1.0 - fake_clock.tick)
    assert others.cores == pytest.approx(2.0)
    torch.set_num_threads(os.cpu_count() or 1)  # threads on every core: none free for others (restored after the test)
    assert probe_was_disturbed(others.cores)
    assert not probe_was_disturbed(0.1)
