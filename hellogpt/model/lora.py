"""LoRA: low-rank adapters on a model's linear layers; wrap, read out, load, merge. Pure torch.

An adapted layer computes W x + b + (alpha / r) * B A dropout(x): A (r x in) starts random and B (out x r) at
zero, so a fresh adapter changes nothing. Only A and B train; W stays frozen, may be held in bf16/fp16, and
keeps its name (`...c_attn.weight`), so base weights and adapters share one naming scheme.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from hellogpt.model.added_rows import ADDED_ROWS_SUFFIX, merge_row_adapters

# What a LoRA checkpoint holds: the adapters, and token rows added under LoRA (the chat markers: added_rows.py).
ADAPTER_SUFFIXES = (".lora_A", ".lora_B", ADDED_ROWS_SUFFIX)
# Frozen weights held in half precision: the matrices of the blocks (GPT-2's, Qwen3's). Embeddings, the LM head,
# norms and biases stay fp32: they are small, and the residual stream keeps fp32's precision.
BLOCK_PREFIXES = ("transformer.h.", "model.layers.")


@dataclass(frozen=True)
class LoraSpec:
    """What the adapters are: stored in a LoRA checkpoint beside them."""

    rank: int
    alpha: float
    dropout: float
    targets: tuple[str, ...]

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["targets"] = list(self.targets)
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "LoraSpec":
        return cls(
            rank=int(values["rank"]),
            alpha=float(values["alpha"]),
            dropout=float(values["dropout"]),
            targets=tuple(values["targets"]),
        )


class LoraLinear(nn.Module):
    """A frozen nn.Linear's weight and bias plus a trainable low-rank correction."""

    def __init__(self, base: nn.Linear, spec: LoraSpec) -> None:
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        device = base.weight.device
        # Adapters train in fp32 (autocast casts them per op, as it does full weights).
        self.lora_A = nn.Parameter(torch.empty(spec.rank, base.in_features, device=device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, spec.rank, device=device))
        if device.type != "meta":
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear's own init, as the LoRA paper's code
        self.scaling = spec.scaling
        self.adapter_dropout = nn.Dropout(spec.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = F.linear(F.linear(self.adapter_dropout(x), self.lora_A), self.lora_B)
        return F.linear(x, self.weight, self.bias) + update * self.scaling

    def merged(self) -> nn.Linear:
        """A plain nn.Linear with W + scaling * B A, computed in fp32 and stored in W's dtype."""
        merged = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        with torch.no_grad():
            delta = (self.lora_B.float() @ self.lora_A.float()) * self.scaling
            merged.weight = nn.Parameter((self.weight.float() + delta).to(self.weight.dtype), requires_grad=False)
            if self.bias is not None:
                merged.bias = nn.Parameter(self.bias.detach().clone(), requires_grad=False)
        return merged


def add_adapters(model: nn.Module, spec: LoraSpec) -> list[str]:
    """Wrap every nn.Linear whose name ends in one of `spec.targets`; freeze everything else.

    Returns the wrapped layers' names. ValueError when a target matches no linear layer.
    """
    model.requires_grad_(False)
    wrapped: list[str] = []
    for target in spec.targets:
        names = [name for name, module in model.named_modules() if name.endswith("." + target) and isinstance(module, nn.Linear)]
        if not names:
            raise ValueError(f"LoRA target '{target}' names no linear layer of this model")
        for name in names:
            parent_name, _, child_name = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            setattr(parent, child_name, LoraLinear(getattr(parent, child_name), spec))
            wrapped.append(name)
    return wrapped


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapters' tensors: what a LoRA checkpoint holds instead of the weights."""
    return {name: tensor for name, tensor in model.state_dict().items() if name.endswith(ADAPTER_SUFFIXES)}


def load_adapter_state_dict(model: nn.Module, adapters: Mapping[str, torch.Tensor]) -> None:
    """Copy saved adapters into a model wrapped with the same spec; ValueError naming what does not fit."""
    expected = adapter_state_dict(model)
    missing = sorted(set(expected) - set(adapters))
    unexpected = sorted(set(adapters) - set(expected))
    wrong_shape = [name for name in expected if name in adapters and adapters[name].shape != expected[name].shape]
    if missing or unexpected or wrong_shape:
        first = (missing or unexpected or wrong_shape)[0]
        raise ValueError(
            f"adapters do not fit ({len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(wrong_shape)} of another shape; first: {first})"
        )
    with torch.no_grad():
        for name, tensor in expected.items():
            tensor.copy_(adapters[name])


def merge_adapters(model: nn.Module) -> nn.Module:
    """Fold every adapter (and added token rows) into its weight (in place): the model is a plain GPT again, as fast
    as one."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLinear):
            parent_name, _, child_name = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child_name, module.merged())
    return merge_row_adapters(model)


def frozen_storage_dtype(name: str, ndim: int, half: torch.dtype) -> torch.dtype:
    """The dtype a frozen base tensor is held in: `half` for the blocks' matrices, fp32 for the rest."""
    return half if name.startswith(BLOCK_PREFIXES) and name.endswith(".weight") and ndim == 2 else torch.float32


def hold_frozen_weights_in(model: nn.Module, half: torch.dtype) -> None:
    """Cast the frozen block matrices to `half` in place (a no-op for those loaded in it already)."""
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            continue
        wanted = frozen_storage_dtype(name, parameter.dim(), half)
        if parameter.dtype != wanted:
            parameter.data = parameter.data.to(wanted)


def count_adapter_parameters(adapters: Mapping[str, torch.Tensor]) -> int:
    """The trained numbers; a tensor stored under two names (the added rows of a tied head) counts once."""
    unique = {
        (tensor.data_ptr(), tuple(tensor.shape)) if tensor.data_ptr() else name: tensor.numel()
        for name, tensor in adapters.items()
        if name.endswith(ADAPTER_SUFFIXES)
    }
    return sum(unique.values())


class WeightsDigest:
    """sha256 over named tensors, fed one at a time in any order: the fingerprint of a LoRA checkpoint's base.

    Each tensor is hashed as it streams past (name, dtype, shape and raw bytes); the per-tensor digests are
    combined in name order at the end, so loaders may read tensors in file order without keeping them.
    """

    def __init__(self) -> None:
        self._parts: dict[str, str] = {}

    def update(self, name: str, tensor: torch.Tensor) -> None:
        digest = hashlib.sha256(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        data = tensor.detach().cpu().contiguous()
        if data.numel():
            digest.update(memoryview(data.reshape(-1).view(torch.uint8).numpy()))
        self._parts[name] = digest.hexdigest()

    def update_all(self, tensors: Iterable[tuple[str, torch.Tensor]]) -> "WeightsDigest":
        for name, tensor in tensors:
            self.update(name, tensor)
        return self

    def hexdigest(self) -> str:
        combined = hashlib.sha256()
        for name in sorted(self._parts):
            combined.update(f"{name}={self._parts[name]};".encode())
        return combined.hexdigest()
