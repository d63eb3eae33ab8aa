"""Decides the peak FLOP/s that MFU (model FLOPs utilisation) divides by; a rule would not do, because a CPU's peak
is in no table. With `system.measure: off` it is `system.peak_flops` or nothing (no MFU shown).

MFU divides the model's own arithmetic by a peak: `system.peak_flops` when set (a spec-sheet figure), else the
best rate of square matmuls measured once per machine, dtype and torch and cached (unless other work took the
cores the probe needed: then it serves its run and is measured again next time).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch

from hellogpt.hardware.probes import measuring
from hellogpt.hardware.probes.cache import (
    CpuUseByOthers, cache_file, probe_was_disturbed, read_json, write_json_atomically,
)
from hellogpt.hardware.probes.harness import best_seconds
from hellogpt.hardware.readings import cpu_model_name

PEAK_CACHE_FILE = "peak_flops.json"
# The probe: square matmuls, timed for about this long in total, best rate kept (the CPU may be shared).
PEAK_PROBE_SECONDS = 0.5
PEAK_PROBE_SIZE = {"cpu": 1024, "cuda": 8192, "mps": 4096}
DTYPE_NAMES = ("float32", "bfloat16", "float16")

DeviceLike = Union[str, torch.device]


def peak_flops(
    device: DeviceLike, dtype: torch.dtype, override: Optional[float] = None, measure: Optional[str] = None
) -> Optional[float]:
    """Peak FLOP/s of `device` in `dtype` for MFU: `override` (system.peak_flops, spec-sheet) if set, else a cached
    probe; None (no MFU) when `measure` (system.measure) is off."""
    if override is not None:
        return float(override)
    if not measuring(measure):
        return None
    device = torch.device(device)
    cache_path = peak_flops_cache_path()
    key = _peak_cache_key(device, dtype)
    cached = read_json(cache_path)
    if isinstance(cached.get(key), (int, float)) and cached[key] > 0:
        return float(cached[key])
    with CpuUseByOthers() as others:
        measured = measure_peak_flops(device, dtype)
    if device.type != "cpu" or not probe_was_disturbed(others.cores):
        write_json_atomically(cache_path, {**cached, key: measured})
    return measured


def raise_cached_peak_flops(device: DeviceLike, dtype: torch.dtype, observed: float) -> None:
    """Keep `observed` FLOP/s as the peak when it beats the cache: a probe taken on a busy machine reads low."""
    cache_path = peak_flops_cache_path()
    key = _peak_cache_key(torch.device(device), dtype)
    cached = read_json(cache_path)
    if observed > float(cached.get(key) or 0.0):
        write_json_atomically(cache_path, {**cached, key: observed})


def measure_peak_flops(device: DeviceLike, dtype: torch.dtype, seconds: float = PEAK_PROBE_SECONDS) -> float:
    """Best FLOP/s of repeated square matmuls in `dtype` over about `seconds` (best, because the CPU may be shared)."""
    device = torch.device(device)
    size = PEAK_PROBE_SIZE.get(device.type, PEAK_PROBE_SIZE["cpu"])
    # Its own generator: a run that probes (a cold cache) must draw the same weights as one that does not.
    generator = torch.Generator(device=device).manual_seed(0)
    left = torch.randn(size, size, device=device, generator=generator).to(dtype)
    right = torch.randn(size, size, device=device, generator=generator).to(dtype)
    flops_per_matmul = 2 * size**3

    def matmul() -> None:
        torch.matmul(left, right)
        _synchronize(device)

    return flops_per_matmul / max(best_seconds(matmul, seconds), 1e-9)


def mfu(flops_per_token: float, tokens_per_second: float, peak: float) -> float:
    """Model FLOPs utilisation: the share of the device's peak that the model's own arithmetic uses."""
    if peak <= 0:
        raise ValueError(f"peak FLOP/s must be positive, got {peak}")
    return flops_per_token * tokens_per_second / peak


def peak_flops_cache_path() -> Path:
    """`$XDG_CACHE_HOME/hellogpt/peak_flops.json`, else `~/.cache/hellogpt/peak_flops.json`."""
    return cache_file(PEAK_CACHE_FILE)


def describe_cached_peaks(device: torch.device) -> dict[str, str]:
    """The cached peaks of `device` by dtype; probing is left to the first training run."""
    cached = read_json(peak_flops_cache_path())
    described = {}
    for name in DTYPE_NAMES:
        value = cached.get(_peak_cache_key(device, getattr(torch, name)))
        if isinstance(value, (int, float)):
            described[name] = f"{value / 1e12:.3g} TFLOP/s"
    return described or {"not measured yet": "the first training run measures it (or set system.peak_flops)"}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _peak_cache_key(device: torch.device, dtype: torch.dtype) -> str:
    """Peaks depend on the chip, the dtype, torch's kernels and (on CPU) the thread count."""
    dtype_name = str(dtype).removeprefix("torch.")
    if device.type == "cuda":
        return f"cuda | {torch.cuda.get_device_name(device)} | {dtype_name} | torch {torch.__version__}"
    if device.type == "cpu":
        return f"cpu | {cpu_model_name()} x{torch.get_num_threads()} threads | {dtype_name} | torch {torch.__version__}"
    return f"{device.type} | {device.type} | {dtype_name} | torch {torch.__version__}"
