"""The bf16 packing probe: one probe per machine, cached, re-measured when the cache is unreadable; none when off."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from hellogpt.hardware.probes import packing as rules
from hellogpt.hardware.probes.cache import CpuUseByOthers, cache_file
from hellogpt.hardware.probes.packing import CpuRules, cpu_rules, should_pack_bf16
from tests.hardware.probes.conftest import FakeClock


@pytest.fixture
def small_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rules, "DECODE_PROBE_FP32_BYTES", 4 * 2**20)
    monkeypatch.setattr(rules, "PROBE_ROUNDS", 1)


def test_the_rules_are_measured_once_then_read_from_the_cache(
    cache_home: Path, small_probe: None, quiet_machine: None, fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = cpu_rules()
    assert first.read_bytes_per_second > 0 and "bfloat16" in first.decode_seconds
    assert len(json.loads(cache_file("cpu_rules.json").read_text())) == 1
    monkeypatch.setattr(rules, "measure_cpu_rules", pytest.fail)
    assert cpu_rules() == first


def test_a_corrupt_rules_cache_is_measured_again(cache_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache_file("cpu_rules.json").parent.mkdir(parents=True)
    cache_file("cpu_rules.json").write_text('{"x": 1')
    again = CpuRules(1e10, {"bfloat16": 1.0})
    monkeypatch.setattr(rules, "measure_cpu_rules", lambda: again)
    assert cpu_rules() == again


def test_the_probe_leaves_the_global_rng_alone(small_probe: None, fake_clock: FakeClock) -> None:
    torch.manual_seed(5)
    state = torch.get_rng_state()
    rules.measure_cpu_rules()
    assert torch.equal(torch.get_rng_state(), state)


def test_packing_pays_by_the_clock_the_harness_reads(
    small_probe: None, fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe's decision follows its clock: a packed pass that the clock says is faster is chosen."""
    plain_linear = rules.F.linear

    def slow_linear(*args: torch.Tensor) -> torch.Tensor:
        fake_clock.advance(2e-3)
        return plain_linear(*args)

    monkeypatch.setattr(rules.F, "linear", slow_linear)
    monkeypatch.setattr(rules, "packed_linear", lambda row, weight, bias: fake_clock.advance(1e-3))
    measured = rules.measure_cpu_rules()
    if "bfloat16 packed" not in measured.decode_seconds:
        pytest.skip("no oneDNN bf16 packing on this torch or CPU")
    assert measured.pack_bf16


def test_off_never_packs_and_never_measures(cache_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rules, "measure_cpu_rules", pytest.fail)
    assert should_pack_bf16("off") is False
    monkeypatch.setenv("HELLOGPT_MEASURE", "off")
    assert should_pack_bf16("auto") is False
    assert should_pack_bf16(None) is False


def test_packing_is_chosen_only_where_it_measured_faster() -> None:
    assert CpuRules(1e10, {"bfloat16": 1.0, "bfloat16 packed": 0.5}).pack_bf16
    assert not CpuRules(1e10, {"bfloat16": 1.0, "bfloat16 packed": 1.5}).pack_bf16
    assert not CpuRules(1e10, {"bfloat16": 1.0}).pack_bf16


def test_a_probe_that_other_work_disturbed_serves_its_run_but_is_not_cached(
    cache_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Busy(CpuUseByOthers):
        def __exit__(self, *_: object) -> None:
            self.cores = float(os.cpu_count() or 1)  # every core taken by someone else

    class Quiet(CpuUseByOthers):
        def __exit__(self, *_: object) -> None:
            self.cores = 0.0

    measured = [CpuRules(1e10, {"bfloat16": 1.0}), CpuRules(2e10, {"bfloat16": 2.0})]
    monkeypatch.setattr(rules, "measure_cpu_rules", lambda: measured.pop(0))
    monkeypatch.setattr(rules, "CpuUseByOthers", Busy)
    assert cpu_rules().read_bytes_per_second == 1e10
    assert not cache_file("cpu_rules.json").exists()
    assert cpu_rules().read_bytes_per_second == 1e10  # one probe per process: every model is packed alike
    rules._measured_in_this_process.cache_clear()  # the next process
    monkeypatch.setattr(rules, "CpuUseByOthers", Quiet)
    assert cpu_rules().read_bytes_per_second == 2e10  # measured again, on a quiet machine this time: kept
    assert cpu_rules().read_bytes_per_second == 2e10
