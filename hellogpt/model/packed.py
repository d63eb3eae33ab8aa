"""Faster bf16 decoding on CPUs: Linear weights reordered once into oneDNN's blocked layout.

Decoding multiplies one token by every weight matrix, so each step is a matrix-vector
product whose speed is how fast the weights stream through the cores. `F.linear` on bf16
re-reads a plain row-major weight each call; oneDNN's prepacked layout streams it faster where
oneDNN has bf16 kernels (1.4x on a 2-core Xeon with AMX). Whether it pays on this machine is
measured (`hellogpt.hardware.probes.packing`); the results are identical to `F.linear`'s.
The two oneDNN entry points are private torch APIs: each sits behind one function with a fallback.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

# oneDNN picks its blocking for this many rows; decoding feeds one token at a time.
DECODE_ROWS = 1


def reorder_linear_weight(weight: torch.Tensor) -> Optional[torch.Tensor]:
    """`weight` in oneDNN's blocked layout for one-row products, or None where this torch or CPU cannot."""
    reorder = getattr(torch.ops.mkldnn, "_reorder_linear_weight", None)
    if reorder is None or not torch.backends.mkldnn.is_available():
        return None
    try:
        with torch.no_grad():
            return reorder(weight.detach(), DECODE_ROWS)
    except RuntimeError:  # no oneDNN kernel for this dtype on this CPU
        return None


def packed_linear(x: torch.Tensor, packed_weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """`F.linear(x, weight, bias)` on a weight from `reorder_linear_weight`."""
    return torch.ops.mkldnn._linear_pointwise(x, packed_weight, bias, "none", [], "")


class PackedLinear(nn.Module):
    """An inference-only `nn.Linear` whose bf16 weight is also held prepacked for oneDNN.

    `weight` and `bias` stay the original parameters (tying, state_dict and parameter counts are
    unchanged); the packed copy goes stale if they are later modified or cast.
    """

    def __init__(self, linear: nn.Linear, packed_weight: torch.Tensor) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self._packed_weight = packed_weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return packed_linear(x, self._packed_weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, packed"


def can_pack_linear_layers(weight: torch.Tensor) -> bool:
    """Whether bf16 CPU weights like `weight` can be prepacked here (not whether it pays: see hardware.probes.packing)."""
    if weight.device.type != "cpu" or weight.dtype != torch.bfloat16:
        return False
    return reorder_linear_weight(torch.zeros(8, 8, dtype=torch.bfloat16)) is not None


def pack_linear_layers(model: nn.Module) -> nn.Module:
    """Replace every `nn.Linear` of `model` (in place) by a `PackedLinear` sharing its parameters."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                packed_weight = reorder_linear_weight(child.weight)
                if packed_weight is not None:
                    setattr(parent, name, PackedLinear(child, packed_weight))
    return model
