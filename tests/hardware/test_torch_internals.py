"""Each private torch API we use has a fallback: a torch without it, or refusing, costs speed, never a crash."""

from __future__ import annotations

import pytest
import torch

from hellogpt.hardware import torch_internals
from hellogpt.hardware.torch_internals import mkldnn_has_native_bf16, nvml_device_index
from hellogpt.model import packed
from hellogpt.model.packed import pack_linear_layers, reorder_linear_weight


def test_gpu_sensors_read_the_gpu_that_cuda_visible_devices_maps_cuda_n_to(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert nvml_device_index(0) == 2 and nvml_device_index(1) == 3
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert nvml_device_index(1) == 1


def test_without_torchs_nvml_helper_cuda_n_is_gpu_n(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(torch.cuda, "_get_nvml_device_index", raising=False)
    assert nvml_device_index(1) == 1


def test_an_nvml_helper_that_cannot_map_the_gpus_falls_back_to_the_same_number(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(index: int) -> int:
        raise RuntimeError("Can't get device UUIDs")

    monkeypatch.setattr(torch.cuda, "_get_nvml_device_index", refuse)
    assert nvml_device_index(0) == 0


def test_a_refusing_bf16_check_reads_as_no_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    class RefusingOps:
        def _is_mkldnn_bf16_supported(self) -> bool:
            raise RuntimeError("no")

    monkeypatch.setattr(torch_internals.torch.ops, "mkldnn", RefusingOps())
    assert mkldnn_has_native_bf16() is False


def test_without_onednns_reorder_nothing_is_packed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packed.torch.ops, "mkldnn", object())
    assert reorder_linear_weight(torch.zeros(4, 4, dtype=torch.bfloat16)) is None
    model = torch.nn.Sequential(torch.nn.Linear(4, 4).bfloat16())
    assert type(pack_linear_layers(model)[0]) is torch.nn.Linear
