"""Device and dtype choice, peak FLOP/s and MFU, and cheap readings of CPU, RAM and GPU.

The loop and chat ask here which device and dtype to use, and the dashboard asks
for live readings; all get plain values, and nothing here prints.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import time
from pathlib import Path
from typing import Any, ContextManager, Optional, Union

import torch

from hellogpt.errors import UserError

DeviceLike = Union[str, torch.device]

DTYPES_BY_NAME = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Measured on a 2-core Xeon with AMX (see `cpu_bf16_is_faster`): below this width bf16 autocast
# on CPU costs more in casts than its matmuls save; at and above it, it is 1.2-2x faster.
CPU_BF16_MIN_WIDTH = 256
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
PEAK_CACHE_FILE = "peak_flops.json"
# The probe: square matmuls, timed for about this long in total, best rate kept (the CPU may be shared).
PEAK_PROBE_SECONDS = 0.5
PEAK_PROBE_SIZE = {"cpu": 1024, "cuda": 8192, "mps": 4096}
BYTES_PER_GIB = 1024**3


def choose_device(setting: str) -> torch.device:
    """`system.device` -> a torch device: auto = cuda, then mps, then cpu; an unavailable explicit choice is a UserError."""
    setting = setting.strip().lower()
    if setting == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if setting == "cpu":
        return torch.device("cpu")
    if setting.startswith("cuda"):
        return _cuda_device(setting)
    if setting == "mps":
        if not _mps_available():
            raise UserError("system.device is 'mps' but this torch sees no Apple GPU: use `--set system.device=auto`")
        return torch.device("mps")
    raise UserError(f"system.device '{setting}' is not a device: use auto, cpu, cuda, cuda:N or mps")


def choose_dtype(setting: str, device: DeviceLike, model_config: Any = None) -> torch.dtype:
    """`system.dtype` -> the dtype a model computes in, by one rule for training and decoding alike.

    auto: bf16 on CUDA GPUs with native bf16, fp16 on older ones; on a CPU bf16 only with native bf16
    (AVX512-BF16/AMX) and a model at least `CPU_BF16_MIN_WIDTH` wide; fp32 otherwise (MPS, unknown models).
    Explicit names are checked here for both: float16 is for GPUs (on a CPU bf16 is the half type with hardware
    support, and keeps fp32's range where fp16 overflows); bfloat16 needs a GPU that has it.
    The uses differ, the rule does not: training autocasts to the dtype over fp32 weights (fp16 then needs a
    GradScaler), decoding casts the weights themselves (half the bytes read per token). Narrow models lose to
    bf16's per-op overhead either way; the width threshold was measured for training, and decoding keeps it
    until decoding gets a measurement of its own.
    """
    device = torch.device(device)
    if setting == "auto":
        return _auto_dtype(device, model_config)
    if setting not in DTYPES_BY_NAME:
        raise UserError(f"system.dtype '{setting}' is not a dtype: use auto, float32, bfloat16 or float16")
    dtype = DTYPES_BY_NAME[setting]
    if device.type == "cpu" and dtype == torch.float16:
        raise UserError(
            "system.dtype=float16 is for GPUs, not the CPU: use `--set system.dtype=auto` (or bfloat16/float32)"
        )
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise UserError("system.dtype=bfloat16 but this GPU has no bf16: use `--set system.dtype=auto` (float16)")
    return dtype


def cuda_has_native_bf16() -> bool:
    """bf16 in the GPU's hardware (Ampere and later); torch's default check also counts T4/V100's slow emulated bf16."""
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # an older torch: no such argument, and it counted native bf16 only
        return bool(torch.cuda.is_bf16_supported())


def needs_grad_scaler(dtype: torch.dtype) -> bool:
    """fp16 gradients underflow without loss scaling; bf16 and fp32 have fp32's exponent range."""
    return dtype == torch.float16


def autocast_context(device: DeviceLike, dtype: torch.dtype) -> ContextManager[Any]:
    """The mixed-precision context for a forward pass: autocast for bf16/fp16, nothing for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 instructions (AVX512-BF16 or AMX) and torch's oneDNN can use them."""
    flags = _cpu_flags()
    if not any(flag in flags for flag in CPU_BF16_FLAGS):
        return False
    if not torch.backends.mkldnn.is_available():
        return False
    is_supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(is_supported()) if is_supported is not None else False


def cpu_bf16_is_faster(model_config: Any) -> bool:
    """Whether bf16 autocast beats fp32 on a native-bf16 CPU for this model, by its width.

    Measured (forward+backward, medians of 5 interleaved steps, 2-core Xeon with AMX, torch 2.13),
    bf16 speed over fp32: width 128: 0.91x (vocab 65) and 0.53x (vocab 50304); width 192: 1.08x;
    width 256: 1.5-1.9x; width 384: 2.0x (vocab 65), 1.4-1.5x (edgar_poe, vocab 50304); width 768: 1.24x.
    Below 256 the casts and small ops that bf16 does not speed up outweigh the faster matmuls.
    """
    width = getattr(model_config, "n_embd", None) if model_config is not None else None
    return width is not None and width >= CPU_BF16_MIN_WIDTH


def peak_flops(device: DeviceLike, dtype: torch.dtype, override: Optional[float] = None) -> float:
    """Peak FLOP/s of `device` in `dtype` for MFU: `override` (system.peak_flops) if set, else a cached probe."""
    if override is not None:
        return float(override)
    device = torch.device(device)
    cache_path = peak_flops_cache_path()
    key = _peak_cache_key(device, dtype)
    cached = _read_json(cache_path)
    if isinstance(cached.get(key), (int, float)) and cached[key] > 0:
        return float(cached[key])
    measured = measure_peak_flops(device, dtype)
    _write_json_atomically(cache_path, {**cached, key: measured})
    return measured


def raise_cached_peak_flops(device: DeviceLike, dtype: torch.dtype, observed: float) -> None:
    """Keep `observed` FLOP/s as the peak when it beats the cache: a probe taken on a busy machine reads low."""
    cache_path = peak_flops_cache_path()
    key = _peak_cache_key(torch.device(device), dtype)
    cached = _read_json(cache_path)
    if observed > float(cached.get(key) or 0.0):
        _write_json_atomically(cache_path, {**cached, key: observed})


def measure_peak_flops(device: DeviceLike, dtype: torch.dtype, seconds: float = PEAK_PROBE_SECONDS) -> float:
    """Best FLOP/s of repeated square matmuls in `dtype` over about `seconds` (best, because the CPU may be shared)."""
    device = torch.device(device)
    size = PEAK_PROBE_SIZE.get(device.type, PEAK_PROBE_SIZE["cpu"])
    # Its own generator: a run that probes (a cold cache) must draw the same weights as one that does not.
    generator = torch.Generator(device=device).manual_seed(0)
    left = torch.randn(size, size, device=device, generator=generator).to(dtype)
    right = torch.randn(size, size, device=device, generator=generator).to(dtype)
    flops_per_matmul = 2 * size**3
    torch.matmul(left, right)  # warm-up: kernel selection and first-touch allocation
    _synchronize(device)
    best_rate = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        torch.matmul(left, right)
        _synchronize(device)
        elapsed = time.perf_counter() - start
        best_rate = max(best_rate, flops_per_matmul / max(elapsed, 1e-9))
    return best_rate


def mfu(flops_per_token: float, tokens_per_second: float, peak: float) -> float:
    """Model FLOPs utilisation: the share of the device's peak that the model's own arithmetic uses."""
    if peak <= 0:
        raise ValueError(f"peak FLOP/s must be positive, got {peak}")
    return flops_per_token * tokens_per_second / peak


def peak_flops_cache_path() -> Path:
    """`$XDG_CACHE_HOME/hellogpt/peak_flops.json`, else `~/.cache/hellogpt/peak_flops.json`."""
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home) / "hellogpt" / PEAK_CACHE_FILE


def describe_hardware() -> dict[str, Any]:
    """What `hellogpt info` shows: torch, what `auto` picks, GPUs, CPU, threads, RAM, bf16, cached peaks."""
    import psutil

    device = choose_device("auto")
    memory = psutil.virtual_memory()
    return {
        "torch": torch.__version__,
        "auto_device": str(device),
        "auto_dtype": _describe_auto_dtype(device),
        "cuda": _describe_cuda(),
        "mps": "available" if _mps_available() else "not available",
        "cpu": _cpu_model_name(),
        "cpu_cores": f"{psutil.cpu_count(logical=False) or '?'} physical, {psutil.cpu_count(logical=True)} logical",
        "torch_threads": torch.get_num_threads(),
        "ram": f"{memory.total / BYTES_PER_GIB:.1f} GiB total, {memory.available / BYTES_PER_GIB:.1f} GiB available",
        "cpu_bf16": "native (AVX512-BF16/AMX)" if cpu_has_native_bf16() else "emulated (slow)",
        "peak_flops": _describe_cached_peaks(device),
    }


def read_hardware_state(device: DeviceLike) -> dict[str, Optional[float]]:
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


def _auto_dtype(device: torch.device, model_config: Any) -> torch.dtype:
    if device.type == "cuda":
        return torch.bfloat16 if cuda_has_native_bf16() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16() and cpu_bf16_is_faster(model_config):
        return torch.bfloat16
    return torch.float32


def _describe_auto_dtype(device: torch.device) -> str:
    if device.type == "cuda":
        return str(_auto_dtype(device, None)).removeprefix("torch.")
    if device.type == "cpu" and cpu_has_native_bf16():
        return f"bfloat16 for models >= {CPU_BF16_MIN_WIDTH} wide, else float32"
    return "float32"


def _cuda_device(setting: str) -> torch.device:
    if not torch.cuda.is_available():
        raise UserError(
            f"system.device is '{setting}' but this torch ({torch.__version__}) sees no CUDA GPU: "
            "use `--set system.device=auto` (or cpu)"
        )
    device = torch.device(setting)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(
            f"system.device is '{setting}' but there are {torch.cuda.device_count()} CUDA GPUs "
            f"(cuda:0..cuda:{torch.cuda.device_count() - 1}): use `--set system.device=auto`"
        )
    return device


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _peak_cache_key(device: torch.device, dtype: torch.dtype) -> str:
    """Peaks depend on the chip, the dtype, torch's kernels and (on CPU) the thread count."""
    dtype_name = str(dtype).removeprefix("torch.")
    if device.type == "cuda":
        chip = torch.cuda.get_device_name(device)
    elif device.type == "cpu":
        chip = f"{_cpu_model_name()} x{torch.get_num_threads()} threads"
    else:
        chip = device.type
    return f"{device.type} | {chip} | {dtype_name} | torch {torch.__version__}"


def _describe_cached_peaks(device: torch.device) -> dict[str, str]:
    """The cached peaks of `device` by dtype; probing is left to the first training run."""
    cached = _read_json(peak_flops_cache_path())
    described = {}
    for name, dtype in DTYPES_BY_NAME.items():
        value = cached.get(_peak_cache_key(device, dtype))
        if isinstance(value, (int, float)):
            described[name] = f"{value / 1e12:.3g} TFLOP/s"
    return described or {"not measured yet": "the first training run measures it (or set system.peak_flops)"}


def _describe_cuda() -> Union[str, list[str]]:
    if not torch.cuda.is_available():
        return f"not available (torch built for {'CUDA ' + torch.version.cuda if torch.version.cuda else 'CPU only'})"
    gpus = []
    for index in range(torch.cuda.device_count()):
        properties = torch.cuda.get_device_properties(index)
        bf16 = "bf16" if cuda_has_native_bf16() else "no native bf16"
        gpus.append(f"cuda:{index} {properties.name}, {properties.total_memory / BYTES_PER_GIB:.1f} GiB, {bf16}")
    return gpus


def _read_cuda_state(device: torch.device) -> dict[str, Optional[float]]:
    index = device.index if device.index is not None else torch.cuda.current_device()
    handle = _nvml_handle(_nvml_index(index))
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


def _nvml_index(cuda_index: int) -> int:
    """NVML numbers every GPU of the machine; CUDA only those in CUDA_VISIBLE_DEVICES (cuda:0 may be GPU 2)."""
    try:
        return int(torch.cuda._get_nvml_device_index(cuda_index))
    except Exception:  # a torch without the helper, or GPUs named by UUID without NVML: assume the same order
        return cuda_index


@functools.lru_cache(maxsize=None)
def _nvml_handle(index: int) -> Any:
    """An NVML handle for GPU `index`, or None without pynvml or a driver; initialised once per process."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetHandleByIndex(index)
    except Exception:  # pynvml missing, or NVML present but refusing (containers, old drivers)
        return None


def _nvml_reading(read: Any) -> Optional[float]:
    """Some GPUs do not report temperature or power; a missing reading is None, not an error."""
    try:
        return float(read())
    except Exception:
        return None


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@functools.lru_cache(maxsize=1)
def _cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _read_json(path: Path) -> dict[str, Any]:
    """A cache file's contents, or {} when it is missing or unreadable (it is re-measured, never fatal)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """Best effort: an unwritable cache only means measuring again next time."""
    from hellogpt.files import write_text_atomically

    try:
        write_text_atomically(path, json.dumps(data, indent=2, sort_keys=True))
    except OSError:
        pass
