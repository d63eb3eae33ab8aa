"""Device and dtype rules: `auto` as a fixed rule of the hardware and the model's width, explicit names, int8 refusals."""

from __future__ import annotations

import pytest
import torch

from hellogpt.errors import UserError
from hellogpt.hardware import devices, readings
from hellogpt.hardware.probes import harness, packing
from hellogpt.hardware.devices import (
    CPU_BF16_MIN_WIDTH,
    auto_dtype,
    choose_device,
    choose_dtype,
    needs_grad_scaler,
    refuse_quantized_training,
)
from hellogpt.model.gpt import GPTConfig

CHAR_MODEL = GPTConfig(n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=65, dropout=0.0, bias=True, arch="gpt2")
POE_MODEL = GPTConfig(n_layer=12, n_head=12, n_embd=384, block_size=256, vocab_size=50304, dropout=0.0, bias=True, arch="gpt2")


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "mps_available", lambda: False)


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch: pytest.MonkeyPatch, no_gpu: None) -> None:
    assert choose_device("auto") == torch.device("cpu")
    monkeypatch.setattr(devices, "mps_available", lambda: True)
    assert choose_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_device("auto") == torch.device("cuda")


def test_cuda_without_a_gpu_names_the_setting_and_the_fix(no_gpu: None) -> None:
    with pytest.raises(UserError, match=r"system.device is 'cuda'.*--set system.device=auto"):
        choose_device("cuda")


def test_a_gpu_index_beyond_the_count_is_a_user_error(fake_cuda: None) -> None:
    with pytest.raises(UserError, match=r"'cuda:3' but there are 1 CUDA GPUs"):
        choose_device("cuda:3")


@pytest.mark.parametrize(
    ("device_type", "native_bf16", "width", "expected"),
    [
        ("cuda", True, 0, torch.bfloat16),
        ("cuda", False, 768, torch.float16),  # T4/V100: emulated bf16 is slow, fp16 with a scaler is not
        ("cpu", True, CPU_BF16_MIN_WIDTH, torch.bfloat16),
        ("cpu", True, 768, torch.bfloat16),
        ("cpu", True, 128, torch.float32),  # the quickstart width trains slower in bf16
        ("cpu", True, 0, torch.float32),  # a model of unknown width
        ("cpu", False, 768, torch.float32),  # emulated bf16
        ("mps", True, 768, torch.float32),
    ],
)
def test_auto_dtype_is_a_fixed_rule_of_the_device_its_bf16_and_the_width(
    device_type: str, native_bf16: bool, width: int, expected: torch.dtype
) -> None:
    assert auto_dtype(device_type, native_bf16, width) == expected


def test_auto_dtype_reads_the_hardware_and_the_models_width_and_never_times_anything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(packing, "cpu_rules", pytest.fail)
    monkeypatch.setattr(harness, "clock", pytest.fail)
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    assert choose_dtype("auto", "cpu", POE_MODEL) == torch.bfloat16
    assert choose_dtype("auto", "cpu", CHAR_MODEL) == torch.float32
    assert choose_dtype("auto", "cpu") == torch.float32
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    assert choose_dtype("auto", "cpu", POE_MODEL) == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert choose_dtype("auto", "cuda") == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert choose_dtype("auto", "cuda") == torch.bfloat16
    assert needs_grad_scaler(torch.float16) and not needs_grad_scaler(torch.bfloat16)


def test_float16_on_cpu_is_a_user_error() -> None:
    with pytest.raises(UserError, match="float16 is for GPUs, not the CPU"):
        choose_dtype("float16", "cpu")


def test_explicit_dtypes_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    assert choose_dtype("bfloat16", "cpu", CHAR_MODEL) == torch.bfloat16
    assert choose_dtype("float32", "cpu", POE_MODEL) == torch.float32


def test_int8_is_refused_for_training_in_one_line() -> None:
    refuse_quantized_training("none")
    with pytest.raises(UserError, match=r"^system.quantize=int8 is for chat, serve and eval, not training.*quantize=none`$"):
        refuse_quantized_training("int8")


def test_native_bf16_needs_both_the_cpu_flag_and_onednn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert not devices.cpu_has_native_bf16()
    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    monkeypatch.setattr(devices, "mkldnn_has_native_bf16", lambda: False)
    assert not devices.cpu_has_native_bf16()
    monkeypatch.setattr(devices, "mkldnn_has_native_bf16", lambda: True)
    assert devices.cpu_has_native_bf16()
    assert readings.cpu_flags() is readings.cpu_flags()  # read once per process
