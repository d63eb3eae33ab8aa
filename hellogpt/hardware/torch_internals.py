"""Private torch APIs, each behind one narrow function with a fallback for a torch that lacks or refuses it.

They are private because torch may rename them in any release; a missing one costs speed or a reading,
never a crash.
"""

from __future__ import annotations

import torch


def nvml_device_index(cuda_index: int) -> int:
    """NVML's number for `cuda:N`: NVML counts every GPU, CUDA only those in CUDA_VISIBLE_DEVICES.

    Falls back to the same number (the usual case: no CUDA_VISIBLE_DEVICES) when torch lacks the helper or
    cannot map the GPUs (UUIDs without NVML).
    """
    helper = getattr(torch.cuda, "_get_nvml_device_index", None)
    if helper is None:
        return cuda_index
    try:
        return int(helper(cuda_index))
    except (RuntimeError, OSError, ValueError, ImportError):
        return cuda_index


def mkldnn_has_native_bf16() -> bool:
    """Whether torch's oneDNN runs bf16 on the CPU's own bf16 instructions; False when torch cannot say."""
    if not torch.backends.mkldnn.is_available():
        return False
    is_supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if is_supported is None:
        return False
    try:
        return bool(is_supported())
    except RuntimeError:
        return False
