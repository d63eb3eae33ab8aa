"""Device and dtype choice: which device a model runs on, and the dtype it trains, scores and decodes in.

The dtype changes the numbers a run computes, so `auto` is a fixed rule of what the hardware reports (CUDA's bf16,
the CPU's flags in `readings.cpu_flags`) and the model's width, never a timing: the same machine and model always
get the same dtype, and a resumed run reuses the one its checkpoint recorded (`hellogpt.train.precision`).
"""

from __future__ import annotations

import contextlib
from typing import Any, ContextManager, Union

import torch

from hellogpt.errors import UserError
from hellogpt.hardware.readings import cpu_flags, mps_available
from hellogpt.hardware.torch_internals import mkldnn_has_native_bf16

DeviceLike = Union[str, torch.device]

DTYPES_BY_NAME = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# The narrowest model a CPU with native bf16 trains and decodes in bf16. Measured on a 2-core Xeon with AMX (torch
# 2.13, 2026-12): one transformer block's forward and backward ran 0.8x fp32's speed in bf16 at width 128 (the
# 4x128 quickstart model trained 10-15% slower), reached the 1.1x that pays for the optimizer and data at 192-256,
# and the 12x384 edgar_poe model trained 1.88x faster; decoding GPT-2-wide (768) matrices streamed faster in bf16,
# while narrower models are bound by per-op overhead, not by the bytes bf16 halves.
CPU_BF16_MIN_WIDTH = 256


def choose_device(setting: str) -> torch.device:
    """`system.device` -> a torch device: auto = cuda, then mps, then cpu; an unavailable explicit choice is a UserError."""
    setting = setting.strip().lower()
    if setting == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if setting == "cpu":
        return torch.device("cpu")
    if setting.startswith("cuda"):
        return _cuda_device(setting)
    if setting == "mps":
        if not mps_available():
            raise UserError("system.device is 'mps' but this torch sees no Apple GPU: use `--set system.device=auto`")
        return torch.device("mps")
    raise UserError(f"system.device '{setting}' is not a device: use auto, cpu, cuda, cuda:N or mps")


def choose_dtype(setting: str, device: DeviceLike, model_config: Any = None) -> torch.dtype:
    """`system.dtype` -> the dtype a model computes in: training and scoring autocast to it over fp32 weights,
    decoding (chat, serve) casts the weights to it. `auto` is `auto_dtype` on this device's bf16 support and the
    model's width; explicit names are checked (`check_explicit_dtype`)."""
    device = torch.device(device)
    if setting != "auto":
        return check_explicit_dtype(setting, device)
    return auto_dtype(device.type, has_native_bf16(device), _width(model_config))


def auto_dtype(device_type: str, native_bf16: bool, width: int) -> torch.dtype:
    """The fixed rule behind `system.dtype: auto`: on CUDA bf16 where the GPU has it natively, else fp16 (with a
    gradient scaler); on a CPU bf16 only with native bf16 and a model at least `CPU_BF16_MIN_WIDTH` wide; else fp32
    (MPS, unknown models)."""
    if device_type == "cuda":
        return torch.bfloat16 if native_bf16 else torch.float16
    if device_type == "cpu" and native_bf16 and width >= CPU_BF16_MIN_WIDTH:
        return torch.bfloat16
    return torch.float32


def has_native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 in its hardware (emulated bf16 is an order of magnitude slower)."""
    if device.type == "cuda":
        return cuda_has_native_bf16()
    return device.type == "cpu" and cpu_has_native_bf16()


def dtype_name(dtype: torch.dtype) -> str:
    """`torch.bfloat16` -> "bfloat16": how a dtype is written in configs, checkpoints and output."""
    return str(dtype).removeprefix("torch.")


def check_explicit_dtype(setting: str, device: torch.device) -> torch.dtype:
    """An explicit dtype name, refused where it cannot work: float16 on a CPU, bf16 on a GPU without it."""
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


def refuse_quantized_training(quantize: str) -> None:
    """int8 weights are for decoding and scoring: gradients cannot flow through them."""
    if quantize != "none":
        raise UserError(
            f"system.quantize={quantize} is for chat, serve and eval, not training (int8 weights get no gradients): "
            "use `--set system.quantize=none`"
        )


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
    """True when the CPU reports bf16 instructions (AVX512-BF16 or AMX) and torch's oneDNN can use them."""
    return any(flag in cpu_flags() for flag in CPU_BF16_FLAGS) and mkldnn_has_native_bf16()


def describe_auto_dtype(device: torch.device) -> str:
    """What `auto` picks on `device`, in words, for `hellogpt info`."""
    if device.type == "cuda":
        return dtype_name(auto_dtype("cuda", cuda_has_native_bf16(), 0))
    if device.type == "cpu" and cpu_has_native_bf16():
        return f"bfloat16 for models at least {CPU_BF16_MIN_WIDTH} wide, else float32"
    return "float32"


def _width(model_config: Any) -> int:
    return int(getattr(model_config, "n_embd", 0) or 0) if model_config is not None else 0


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
