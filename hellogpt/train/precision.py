"""The dtype a run computes in, decided once and kept: the checkpoint records it and `--resume` reuses it.

A new run takes `system.dtype` through the fixed rule (`hardware.devices.choose_dtype`); a resumed one keeps
what its checkpoint recorded, so that another thread count, torch version or machine never changes its numbers
half-way (checkpoints from before the record take the rule once, and record it from then on). Under torchrun
rank 0's choice is every rank's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

from hellogpt.checkpoints.format import Checkpoint
from hellogpt.errors import UserError
from hellogpt.hardware.devices import DTYPES_BY_NAME, check_explicit_dtype, choose_dtype, dtype_name
from hellogpt.train.distributed import DistributedContext, broadcast_from_main, gather_from_ranks


def run_dtype(
    setting: str, device: torch.device, model_config: Any, resumed: Optional[Checkpoint], resumed_path: Optional[Path]
) -> torch.dtype:
    """The dtype of a run: the recorded one when resuming (an explicit different `system.dtype` is refused),
    else `system.dtype` by the rule."""
    if resumed is None or resumed.dtype is None:
        return choose_dtype(setting, device, model_config)
    recorded = resumed.dtype
    if setting not in ("auto", recorded):
        raise UserError(
            f"{resumed_path} was trained in {recorded} and system.dtype is {setting}: a resumed run keeps its dtype; "
            f"resume with --set system.dtype={recorded} (or auto), or start a new run from its weights with "
            f"`hellogpt tune --from {resumed_path} --set system.dtype={setting}`"
        )
    if not can_compute_in(recorded, device):
        raise UserError(
            f"{resumed_path} was trained in {recorded}, which the {device.type} here cannot compute in: resume it on "
            f"a device that can, or start a new run from its weights with `hellogpt tune --from {resumed_path}`"
        )
    return DTYPES_BY_NAME[recorded]


def agree_on_dtype(dtype: torch.dtype, context: DistributedContext) -> torch.dtype:
    """Rank 0's dtype on every rank (a rank that would have chosen another follows it); when some rank's device
    cannot compute in it, every rank stops with the same one line."""
    if not context.is_distributed:
        return dtype
    name = broadcast_from_main(dtype_name(dtype), context)
    able = gather_from_ranks(can_compute_in(name, context.device), context)
    unable = [str(rank) for rank, ok in enumerate(able) if not ok]
    if unable:
        raise UserError(
            f"rank 0 chose {name}, which the device of rank {', '.join(unable)} cannot compute in: "
            "set a dtype every rank supports, e.g. --set system.dtype=float32"
        )
    return DTYPES_BY_NAME[name]


def can_compute_in(name: str, device: torch.device) -> bool:
    """Whether `device` runs dtype `name` (fp16 is for GPUs; bf16 needs a GPU that has it)."""
    try:
        check_explicit_dtype(name, device)
    except UserError:
        return False
    return True
