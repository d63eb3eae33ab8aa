"""int8 weights for decoding on CPUs: every Linear layer and the LM head, one scale per output channel.

Decoding reads every weight once per token, so a quarter of fp32's bytes is most of the speed. The kernels are
torch's own dynamic int8 ones (fbgemm/oneDNN on x86, qnnpack on ARM): the int8 weight is packed once at load
time, and each call quantises the activation row on the fly, multiplies in int8 and rescales to fp32.
torch's `_weight_int8pack_mm` was tried and left out: its CPU kernel was 5x slower than fp32 on AVX2.
Activations, LayerNorms, the embeddings and the KV cache stay fp32. CPU only; inference only. Pure torch.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Optional

import torch
import torch.nn as nn

INT8_MAX = 127
# Fastest first, as measured on x86 (the x86 engine picks fbgemm or oneDNN per shape: 2.4x fbgemm alone on the
# 50257x768 LM head); qnnpack is the ARM one.
ENGINE_PREFERENCE = ("x86", "fbgemm", "onednn", "qnnpack")
# fbgemm's int8 products accumulate pairs in int16: 7-bit activations cannot overflow it (torch's dynamic default).
REDUCE_RANGE = True


def int8_engine() -> Optional[str]:
    """The best quantized engine this torch build has, or None where it has none."""
    supported = set(torch.backends.quantized.supported_engines)
    return next((engine for engine in ENGINE_PREFERENCE if engine in supported), None)


class Int8Linear(nn.Module):
    """An inference-only Linear whose weight is int8 with one fp32 scale per output row (symmetric)."""

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor], engine: str) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        weight = weight.detach().float()
        scales = (weight.abs().amax(dim=1) / INT8_MAX).clamp(min=torch.finfo(torch.float32).tiny)
        zero_points = torch.zeros(self.out_features, dtype=torch.long)
        with warnings.catch_warnings():  # torch marks quantized tensors deprecated; its int8 kernels still take them
            warnings.simplefilter("ignore", UserWarning)
            quantized = torch.quantize_per_channel(weight, scales.double(), zero_points, axis=0, dtype=torch.qint8)
        fp32_bias = None if bias is None else bias.detach().float().contiguous()
        with _quantized_engine(engine):
            self._packed = torch.ops.quantized.linear_prepack(quantized, fp32_bias)
        self.engine = engine
        # The int8 values and scales, for inspection (`weight.device`/`dtype` say where and how the model runs).
        self.register_buffer("weight", quantized.int_repr(), persistent=False)
        self.register_buffer("scales", scales, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        out = torch.ops.quantized.linear_dynamic(rows, self._packed, REDUCE_RANGE)
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per channel ({self.engine})"


def quantize_int8(model: nn.Module) -> nn.Module:
    """Replace every `nn.Linear` of an fp32 CPU `model` (the LM head too) by an `Int8Linear`, in place.

    The LM head tied to the token embedding gets its own int8 copy; the embedding stays fp32 for lookups.
    """
    engine = int8_engine()
    if engine is None:
        raise RuntimeError("this torch build has no quantized engine (fbgemm, onednn or qnnpack)")
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                if child.weight.device.type != "cpu":
                    raise ValueError("int8 weights run on the CPU only")
                setattr(parent, name, Int8Linear(child.weight, child.bias, engine))
    return model


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(module, Int8Linear) for module in model.modules())


@contextlib.contextmanager
def _quantized_engine(engine: str) -> Iterator[None]:
    """Pack under `engine`, then put torch's process-wide setting back (calls dispatch on the packed weight)."""
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous
