"""LoRA in training: the adapters' spec from the run config, and the dtype the frozen base is held in.

Loading a base and merging adapters into it is `hellogpt.checkpoints.lora_base`, which every command uses.
"""

from __future__ import annotations

import torch

from hellogpt.config.schema import LORA_TARGETS, LoraConfig
from hellogpt.model.lora import LoraSpec

HALF_DTYPES = (torch.bfloat16, torch.float16)


def lora_spec(config: LoraConfig, arch: str) -> LoraSpec:
    """The adapters a run adds to a model of `arch`, as the model code takes them (unset targets: all of its
    projections)."""
    targets = tuple(config.targets) if config.targets is not None else LORA_TARGETS[arch]
    return LoraSpec(rank=config.rank, alpha=config.alpha, dropout=config.dropout, targets=targets)


def frozen_dtype(run_dtype: torch.dtype) -> torch.dtype:
    """The dtype a frozen base is held in: the run's own (`hellogpt.train.precision`) when it is a half dtype, else
    fp32. Autocast would round the weights to that dtype in every forward anyway, so holding them in it changes no
    result, only the memory."""
    return run_dtype if run_dtype in HALF_DTYPES else torch.float32
