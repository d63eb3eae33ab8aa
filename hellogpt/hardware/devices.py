"""Device and dtype choice: which device a model runs on, and the dtype it trains, scores and decodes in.

Rules that depend on the CPU come from what it reports (`readings.cpu_flags`) and what it measures
(`rules.cpu_rules`), never from assumptions about a family of chips.
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
    """`system.dtype` -> the dtype training and scoring autocast to (over fp32 weights).

    auto: bf16 on CUDA GPUs with native bf16, fp16 on older ones; on a CPU bf16 only with native bf16
    (AVX512-BF16/AMX) and a model at least as wide as the measured bf16 threshold (`rules`); fp32 otherwise
    (MPS, unknown models). Explicit names are checked (`check_explicit_dtype`).
    """
    device = torch.device(device)
    if setting != "auto":
        return check_explicit_dtype(setting, device)
    if device.type == "cuda":
        return _cuda_half_dtype()
    if device.type == "cpu" and cpu_has_native_bf16() and cpu_bf16_is_faster(model_config):
        return torch.bfloat16
    return torch.float32


def choose_decode_dtype(setting: str, device: DeviceLike, model_config: Any = None) -> torch.dtype:
    """`system.dtype` -> the dtype decoding casts the weights themselves to (chat, serve).

    Decoding is bound by reading the weights, not by arithmetic, so on a CPU `auto` takes whichever of fp32
    and bf16 the machine's decode probe streamed faster (bf16 halves the bytes and wins even where it is
    emulated), for models at least `rules.DECODE_RULE_MIN_WIDTH` wide. GPUs and explicit names: as `choose_dtype`.
    """
    device = torch.device(device)
    if setting != "auto":
        return check_explicit_dtype(setting, device)
    if device.type == "cuda":
        return _cuda_half_dtype()
    if device.type != "cpu" or _width(model_config) < _decode_rule_min_width():
        return torch.float32
    from hellogpt.hardware.rules import cpu_rules

    return cpu_rules().decode_dtype


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


def cpu_bf16_is_faster(model_config: Any) -> bool:
    """Whether bf16 autocast beats fp32 for training this model here: its width against the measured threshold.

    Below some width the casts and small ops that bf16 does not speed up outweigh the faster matmuls
    (on a 2-core Xeon with AMX: 0.91x at width 128, 1.5-1.9x at 256); `rules` measures where.
    """
    width = _width(model_config)
    if width == 0:
        return False
    from hellogpt.hardware.rules import cpu_rules

    threshold = cpu_rules().bf16_min_width
    return threshold is not None and width >= threshold


def describe_auto_dtype(device: torch.device) -> str:
    """What `auto` picks on `device`, in words, for `hellogpt info` (without running a probe)."""
    if device.type == "cuda":
        return str(_cuda_half_dtype()).removeprefix("torch.")
    if device.type == "cpu":
        return "measured per CPU: see cpu_rules (training: bf16 only with native bf16)"
    return "float32"


def _width(model_config: Any) -> int:
    return int(getattr(model_config, "n_embd", 0) or 0) if model_config is not None else 0


def _decode_rule_min_width() -> int:
    from hellogpt.hardware.rules import DECODE_RULE_MIN_WIDTH

    return DECODE_RULE_MIN_WIDTH


def _cuda_half_dtype() -> torch.dtype:
    return torch.bfloat16 if cuda_has_native_bf16() else torch.float16


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
