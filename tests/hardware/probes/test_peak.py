"""The cached peak-FLOP/s probe and MFU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hellogpt.hardware.probes import peak
from hellogpt.hardware.probes.peak import measure_peak_flops, mfu, peak_flops, peak_flops_cache_path
from tests.hardware.probes.conftest import FakeClock


def test_peak_flops_override_wins_without_probing(cache_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peak, "measure_peak_flops", pytest.fail)
    assert peak_flops("cpu", torch.float32, override=3e12) == 3e12
    assert not peak_flops_cache_path().exists()


def test_off_uses_the_override_or_no_peak_and_never_measures(cache_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peak, "measure_peak_flops", pytest.fail)
    assert peak_flops("cpu", torch.float32, measure="off") is None
    assert peak_flops("cpu", torch.float32, override=3e12, measure="off") == 3e12
    monkeypatch.setenv("HELLOGPT_MEASURE", "off")
    assert peak_flops("cpu", torch.float32) is None
    assert not peak_flops_cache_path().exists()


def test_the_peak_is_the_best_rate_the_clock_reads(fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each matmul "takes" a time from a script; the slowest (a busy moment) does not count against the peak."""
    durations = iter([5e-3, 4e-3, 2e-3, 8e-3] + [4e-3] * 10_000)
    plain_matmul = torch.matmul

    def scripted_matmul(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        fake_clock.advance(next(durations))
        return plain_matmul(left, right)

    monkeypatch.setattr(peak.torch, "matmul", scripted_matmul)
    size = peak.PEAK_PROBE_SIZE["cpu"]
    monkeypatch.setitem(peak.PEAK_PROBE_SIZE, "cpu", 8)
    rate = measure_peak_flops("cpu", torch.float32, seconds=0.03)
    assert rate == pytest.approx(2 * 8**3 / (2e-3 + fake_clock.tick))  # each reading ticks once
    assert size > 8


def test_peak_flops_is_measured_once_then_read_from_the_cache(
    cache_home: Path, quiet_machine: None, fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(peak.PEAK_PROBE_SIZE, "cpu", 64)
    fake_clock.tick = 0.01  # the half-second probe takes a few dozen readings
    first = peak_flops("cpu", torch.float32)
    assert peak_flops_cache_path() == cache_home / "hellogpt" / "peak_flops.json"
    assert first in json.loads(peak_flops_cache_path().read_text()).values()
    monkeypatch.setattr(peak, "measure_peak_flops", pytest.fail)
    assert peak_flops("cpu", torch.float32) == first


def test_a_corrupt_peak_cache_is_measured_again(cache_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    peak_flops_cache_path().parent.mkdir(parents=True)
    peak_flops_cache_path().write_text("{not json")
    monkeypatch.setattr(peak, "measure_peak_flops", lambda device, dtype: 1.5e11)
    assert peak_flops("cpu", torch.float32) == 1.5e11
    assert list(json.loads(peak_flops_cache_path().read_text()).values()) == [1.5e11]


def test_the_peak_flops_probe_leaves_the_global_rng_alone(
    fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(peak.PEAK_PROBE_SIZE, "cpu", 64)
    # A run that probes (a cold cache) must draw the same initial weights as the run that resumes it.
    torch.manual_seed(5)
    state = torch.get_rng_state()
    assert measure_peak_flops("cpu", torch.float32, seconds=0.01) > 0
    assert torch.equal(torch.get_rng_state(), state)


def test_mfu_is_model_flops_over_peak() -> None:
    assert mfu(flops_per_token=6e6, tokens_per_second=5_000, peak=1e11) == pytest.approx(0.3)


def test_a_peak_probe_that_other_work_disturbed_is_not_cached(cache_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Busy(peak.CpuUseByOthers):
        def __exit__(self, *_: object) -> None:
            self.cores = 64.0

    monkeypatch.setattr(peak, "CpuUseByOthers", Busy)
    monkeypatch.setattr(peak, "measure_peak_flops", lambda device, dtype: 1e9)
    assert peak_flops("cpu", torch.float32) == 1e9
    assert not peak_flops_cache_path().exists()
