"""Device and dtype rules, the cached peak-FLOP/s probe, MFU and the hardware readings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hellogpt import hardware
from hellogpt.cli import app
from hellogpt.errors import UserError
from hellogpt.hardware import (
    choose_device,
    choose_dtype,
    measure_peak_flops,
    mfu,
    needs_grad_scaler,
    peak_flops,
    peak_flops_cache_path,
    read_hardware_state,
)
from hellogpt.model.gpt import GPTConfig

CHAR_MODEL = GPTConfig(n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=65)
POE_MODEL = GPTConfig(n_layer=12, n_head=12, n_embd=384, block_size=256, vocab_size=50304)


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "_mps_available", lambda: False)


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch: pytest.MonkeyPatch, no_gpu: None) -> None:
    assert choose_device("auto") == torch.device("cpu")
    monkeypatch.setattr(hardware, "_mps_available", lambda: True)
    assert choose_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_device("auto") == torch.device("cuda")


def test_cuda_without_a_gpu_names_the_setting_and_the_fix(no_gpu: None) -> None:
    with pytest.raises(UserError, match=r"system.device is 'cuda'.*--set system.device=auto"):
        choose_device("cuda")


def test_a_gpu_index_beyond_the_count_is_a_user_error(fake_cuda: None) -> None:
    with pytest.raises(UserError, match=r"'cuda:3' but there are 1 CUDA GPUs"):
        choose_device("cuda:3")


def test_auto_dtype_on_cuda_is_bf16_or_fp16_with_a_scaler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert choose_dtype("auto", "cuda") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert choose_dtype("auto", "cuda") == torch.float16
    assert needs_grad_scaler(torch.float16) and not needs_grad_scaler(torch.bfloat16)


def test_auto_dtype_on_a_gpu_with_only_emulated_bf16_is_fp16(monkeypatch: pytest.MonkeyPatch) -> None:
    # torch counts T4/V100's emulated bf16 as supported unless asked for the hardware's own.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert choose_dtype("auto", "cuda") == torch.float16


def test_gpu_sensors_read_the_gpu_that_cuda_visible_devices_maps_cuda_n_to(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert hardware._nvml_index(0) == 2 and hardware._nvml_index(1) == 3
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert hardware._nvml_index(1) == 1


def test_auto_dtype_on_a_native_bf16_cpu_depends_on_model_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
    assert choose_dtype("auto", "cpu", POE_MODEL) == torch.bfloat16
    assert choose_dtype("auto", "cpu", CHAR_MODEL) == torch.float32
    assert choose_dtype("auto", "cpu") == torch.float32


def test_auto_dtype_on_a_cpu_without_bf16_is_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    assert choose_dtype("auto", "cpu", POE_MODEL) == torch.float32


def test_float16_on_cpu_is_a_user_error_for_training_and_decoding_alike() -> None:
    with pytest.raises(UserError, match="float16 is for GPUs, not the CPU"):
        choose_dtype("float16", "cpu")


def test_explicit_dtypes_are_kept() -> None:
    assert choose_dtype("bfloat16", "cpu", CHAR_MODEL) == torch.bfloat16
    assert choose_dtype("float32", "cpu", POE_MODEL) == torch.float32


def test_peak_flops_override_wins_without_probing(cache_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "measure_peak_flops", pytest.fail)
    assert peak_flops("cpu", torch.float32, override=3e12) == 3e12
    assert not peak_flops_cache_path().exists()


def test_peak_flops_is_measured_once_then_read_from_the_cache(cache_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = peak_flops("cpu", torch.float32)
    assert peak_flops_cache_path() == cache_home / "hellogpt" / "peak_flops.json"
    assert first in json.loads(peak_flops_cache_path().read_text()).values()
    monkeypatch.setattr(hardware, "measure_peak_flops", pytest.fail)
    assert peak_flops("cpu", torch.float32) == first


def test_a_corrupt_peak_cache_is_measured_again(cache_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    peak_flops_cache_path().parent.mkdir(parents=True)
    peak_flops_cache_path().write_text("{not json")
    monkeypatch.setattr(hardware, "measure_peak_flops", lambda device, dtype: 1.5e11)
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


def test_hardware_state_reads_cpu_and_memory_without_blocking() -> None:
    state = read_hardware_state("cpu")
    assert state["ram_total_bytes"] >= state["ram_used_bytes"] > 0
    assert state["process_rss_bytes"] > 0 and state["cpu_percent"] >= 0


def test_info_without_argument_describes_the_hardware(cache_home: Path) -> None:
    result = CliRunner().invoke(app, ["info", "--json"])
    assert result.exit_code == 0, result.output
    described = json.loads(result.output)
    assert described["torch"] == torch.__version__
    assert described["auto_device"] in {"cpu", "cuda", "mps"}
