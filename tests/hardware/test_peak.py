"""The cached peak-FLOP/s probe and MFU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hellogpt.hardware import peak
from hellogpt.hardware.peak import measure_peak_flops, mfu, peak_flops, peak_flops_cache_path


def test_peak_flops_override_wins_without_probing(cache_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peak, "measure_peak_flops", pytest.fail)
    assert peak_flops("cpu", torch.float32, override=3e12) == 3e12
    assert not peak_flops_cache_path().exists()


def test_peak_flops_is_measured_once_then_read_from_the_cache(
    cache_home: Path, quiet_machine: None, monkeypatch: pytest.MonkeyPatch
) -> None:
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


def test_the_peak_flops_probe_leaves_the_global_rng_alone() -> None:
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
