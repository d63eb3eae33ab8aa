"""Device and dtype rules: training's autocast dtype, decoding's weight dtype, explicit names, int8 refusals."""

from __future__ import annotations

import pytest
import torch

from hellogpt.errors import UserError
from hellogpt.hardware import devices, readings, rules
from hellogpt.hardware.devices import (
    choose_decode_dtype,
    choose_device,
    choose_dtype,
    needs_grad_scaler,
    refuse_quantized_training,
)
from hellogpt.hardware.rules import CpuRules
from hellogpt.model.gpt import GPTConfig

CHAR_MODEL = GPTConfig(n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=65)
POE_MODEL = GPTConfig(n_layer=12, n_head=12, n_embd=384, block_size=256, vocab_size=50304)


def measured(decode_seconds: dict[str, float], bf16_min_width=256) -> CpuRules:
    return CpuRules(read_bytes_per_second=2e10, decode_seconds=decode_seconds, bf16_min_width=bf16_min_width)


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


def test_auto_dtype_on_cuda_is_bf16_or_fp16_with_a_scaler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert choose_dtype("auto", "cuda") == torch.bfloat16
    assert choose_decode_dtype("auto", "cuda") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert choose_dtype("auto", "cuda") == torch.float16
    assert needs_grad_scaler(torch.float16) and not needs_grad_scaler(torch.bfloat16)


def test_auto_dtype_on_a_gpu_with_only_emulated_bf16_is_fp16(monkeypatch: pytest.MonkeyPatch) -> None:
    # torch counts T4/V100's emulated bf16 as supported unless asked for the hardware's own.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert choose_dtype("auto", "cuda") == torch.float16


def test_training_bf16_on_a_native_bf16_cpu_follows_the_measured_width_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(rules, "cpu_rules", lambda: measured({"float32": 1.0, "bfloat16": 2.0}, bf16_min_width=256))
    assert choose_dtype("auto", "cpu", POE_MODEL) == torch.bfloat16
    assert choose_dtype("auto", "cpu", CHAR_MODEL) == torch.float32
    assert choose_dtype("auto", "cpu") == torch.float32
    monkeypatch.setattr(rules, "cpu_rules", lambda: measured({"float32": 1.0, "bfloat16": 2.0}, bf16_min_width=128))
    assert choose_dtype("auto", "cpu", CHAR_MODEL) == torch.bfloat16
    monkeypatch.setattr(rules, "cpu_rules", lambda: measured({"float32": 1.0, "bfloat16": 2.0}, bf16_min_width=None))
    assert choose_dtype("auto", "cpu", POE_MODEL) == torch.float32


def test_training_on_a_cpu_without_native_bf16_is_fp32_without_probing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(rules, "cpu_rules", pytest.fail)
    assert choose_dtype("auto", "cpu", POE_MODEL) == torch.float32


def test_decoding_takes_the_dtype_that_streamed_faster_even_where_bf16_is_emulated(monkeypatch: pytest.MonkeyPatch) -> None:
    # The AVX2 CPU of issue 12: no native bf16, yet bf16 decodes 2x faster because it reads half the bytes.
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(rules, "cpu_rules", lambda: measured({"float32": 0.02, "bfloat16": 0.01}))
    assert choose_decode_dtype("auto", "cpu", POE_MODEL) == torch.bfloat16
    monkeypatch.setattr(rules, "cpu_rules", lambda: measured({"float32": 0.01, "bfloat16": 0.03, "bfloat16 packed": 0.02}))
    assert choose_decode_dtype("auto", "cpu", POE_MODEL) == torch.float32


def test_narrow_models_decode_in_fp32_without_probing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rules, "cpu_rules", pytest.fail)
    assert choose_decode_dtype("auto", "cpu", CHAR_MODEL) == torch.float32


def test_float16_on_cpu_is_a_user_error_for_training_and_decoding_alike() -> None:
    with pytest.raises(UserError, match="float16 is for GPUs, not the CPU"):
        choose_dtype("float16", "cpu")
    with pytest.raises(UserError, match="float16 is for GPUs, not the CPU"):
        choose_decode_dtype("float16", "cpu")


def test_explicit_dtypes_are_kept() -> None:
    assert choose_dtype("bfloat16", "cpu", CHAR_MODEL) == torch.bfloat16
    assert choose_dtype("float32", "cpu", POE_MODEL) == torch.float32
    assert choose_decode_dtype("float32", "cpu", POE_MODEL) == torch.float32


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
