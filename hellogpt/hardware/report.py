"""The hardware report that `hellogpt info` shows: readings, what `auto` picks, and the probes' cached results.

It sits above `readings`, `devices` and `probes` (all three import nothing of it), so the package has no circle.
"""

from __future__ import annotations

from typing import Any, Union

import torch

from hellogpt.hardware.devices import choose_device, cpu_has_native_bf16, cuda_has_native_bf16, describe_auto_dtype
from hellogpt.hardware.probes.packing import describe_cached_rules
from hellogpt.hardware.probes.peak import describe_cached_peaks
from hellogpt.hardware.readings import BYTES_PER_GIB, describe_cpu, mps_available


def describe_hardware() -> dict[str, Any]:
    """What `hellogpt info` shows: torch, what `auto` picks, GPUs, CPU, threads, RAM, bf16, cached measurements."""
    import psutil

    device = choose_device("auto")
    memory = psutil.virtual_memory()
    return {
        "torch": torch.__version__,
        "auto_device": str(device),
        "auto_dtype": describe_auto_dtype(device),
        "cuda": _describe_cuda(),
        "mps": "available" if mps_available() else "not available",
        "cpu": describe_cpu(),
        "cpu_cores": f"{psutil.cpu_count(logical=False) or '?'} physical, {psutil.cpu_count(logical=True)} logical",
        "torch_threads": torch.get_num_threads(),
        "ram": f"{memory.total / BYTES_PER_GIB:.1f} GiB total, {memory.available / BYTES_PER_GIB:.1f} GiB available",
        "cpu_bf16": "native (AVX512-BF16/AMX)" if cpu_has_native_bf16() else "emulated (slow)",
        "peak_flops": describe_cached_peaks(device),
        "cpu_rules": describe_cached_rules(),
    }


def _describe_cuda() -> Union[str, list[str]]:
    if not torch.cuda.is_available():
        return f"not available (torch built for {'CUDA ' + torch.version.cuda if torch.version.cuda else 'CPU only'})"
    gpus = []
    for index in range(torch.cuda.device_count()):
        properties = torch.cuda.get_device_properties(index)
        bf16 = "bf16" if cuda_has_native_bf16() else "no native bf16"
        gpus.append(f"cuda:{index} {properties.name}, {properties.total_memory / BYTES_PER_GIB:.1f} GiB, {bf16}")
    return gpus
