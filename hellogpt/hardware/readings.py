"""What the machine reports: live CPU/RAM/GPU readings for the dashboard and `/proc/cpuinfo` (the report that
`hellogpt info` shows is `hellogpt.hardware.report`).

Readings are cheap and never block; a sensor that a machine lacks reads as None, never as an error.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path
from typing import Any, Optional, Union

import torch

from hellogpt.hardware.torch_internals import nvml_device_index

BYTES_PER_GIB = 1024**3
# The instruction-set extensions that decide how fast matmuls and tokenising run.
SPEED_FLAG_PREFIXES = ("avx", "amx", "sse4_2", "fma", "asimd", "sve")
# Settings that hold oneDNN and MKL to fewer instructions than the chip has (torch's own kernels follow
# ATEN_CPU_CAPABILITY, which `torch.backends.cpu.get_cpu_capability` reports): with them, a CPU runs as an older one.
INSTRUCTION_LIMIT_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (`flags` on x86, `Features` on ARM); empty where unreadable."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def describe_cpu() -> str:
    """The CPU's model, its speed-relevant flags and the instructions torch uses, for benchmark headers: which
    machine a figure is from."""
    wanted = sorted(flag for flag in cpu_flags() if flag.startswith(SPEED_FLAG_PREFIXES))
    flags = " ".join(wanted) or "none of " + "/".join(SPEED_FLAG_PREFIXES)
    return f"{cpu_model_name()}; flags: {flags}; torch kernels: {cpu_kernels()}"


def cpu_kernels() -> str:
    """The vector instructions torch's CPU kernels use here (`AVX512`, `AVX2`, ...), and any limit set on oneDNN or
    MKL: a chip's flags say what it has, this what a run used (`ATEN_CPU_CAPABILITY=avx2` makes an AVX-512 chip
    run torch's AVX2 kernels)."""
    limits = [f"{name}={os.environ[name]}" for name in INSTRUCTION_LIMIT_VARIABLES if os.environ.get(name)]
    return " ".join([torch.backends.cpu.get_cpu_capability(), *limits])


def mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def read_hardware_state(device: Union[str, torch.device]) -> dict[str, Optional[float]]:
    """Cheap live readings for the dashboard; never blocks.

    Keys: cpu_percent, process_rss_bytes, ram_used_bytes, ram_total_bytes, and on CUDA
    gpu_util_percent, gpu_memory_used_bytes, gpu_memory_total_bytes, gpu_temperature_c, gpu_power_w
    (None when unknown). cpu_percent is the use since the previous call (0.0 on the first).
    """
    import psutil

    memory = psutil.virtual_memory()
    state: dict[str, Optional[float]] = {
        "cpu_percent": psutil.cpu_percent(interval=None),
        "process_rss_bytes": float(psutil.Process().memory_info().rss),
        "ram_used_bytes": float(memory.total - memory.available),
        "ram_total_bytes": float(memory.total),
    }
    device = torch.device(device)
    if device.type == "cuda":
        state.update(_read_cuda_state(device))
    elif device.type == "mps":
        state["gpu_memory_used_bytes"] = float(torch.mps.current_allocated_memory())
    return state


def _read_cuda_state(device: torch.device) -> dict[str, Optional[float]]:
    index = device.index if device.index is not None else torch.cuda.current_device()
    handle = _nvml_handle(nvml_device_index(index))
    if handle is None:
        return {
            "gpu_util_percent": None,
            "gpu_memory_used_bytes": float(torch.cuda.memory_reserved(index)),
            "gpu_memory_total_bytes": float(torch.cuda.get_device_properties(index).total_memory),
            "gpu_temperature_c": None,
            "gpu_power_w": None,
        }
    import pynvml

    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    return {
        "gpu_util_percent": float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu),
        "gpu_memory_used_bytes": float(memory.used),
        "gpu_memory_total_bytes": float(memory.total),
        "gpu_temperature_c": _nvml_reading(lambda: pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)),
        "gpu_power_w": _nvml_reading(lambda: pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0),
    }


@functools.lru_cache(maxsize=None)
def _nvml_handle(index: int) -> Any:
    """An NVML handle for GPU `index`, or None without pynvml or a driver; initialised once per process."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetHandleByIndex(index)
    except pynvml.NVMLError:  # NVML present but refusing (containers, old drivers, no driver at all)
        return None


def _nvml_reading(read: Any) -> Optional[float]:
    """Some GPUs do not report temperature or power; a missing reading is None, not an error."""
    import pynvml

    try:
        return float(read())
    except pynvml.NVMLError:
        return None
