"""Each step's loss and gradient norm stay on the device until the loop needs them, then are read in one sync.

Reading a CUDA tensor on the host (`float(loss)`) waits for every queued kernel: doing it twice a step, as the
loop once did, leaves the GPU idle while the host catches up. The loop reads at log steps, before evaluations
and saves, and when it stops. In between, a non-finite loss or gradient norm latches a flag on the device that
makes the fused AdamW skip that update and every later one (its `found_inf` input, the mechanism GradScaler
uses), so a NaN/inf step is still never applied and the weights stay those of the last good step.
Where that skip is not available (a non-fused optimizer, fp16 with its GradScaler, several ranks), every step
is read before its update, with one sync instead of two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist

from hellogpt.train.distributed import DistributedContext


@dataclass(frozen=True)
class Reading:
    """What one read found: the first bad step since the last read (None when all were finite), the values of
    that bad step or else of the latest step, and the stop flags, agreed among ranks."""

    step: int
    loss: float
    grad_norm: float
    diverged: bool
    stop: bool = False
    over_time: bool = False


class StepReadings:
    """Loss and gradient-norm tensors of the steps not read yet, and the device-side divergence latch."""

    def __init__(self, context: DistributedContext, optimizer: torch.optim.Optimizer, grad_scaler_enabled: bool) -> None:
        self.context = context
        # With a GradScaler an inf gradient norm is routine (the scaler skips that step): only the loss counts.
        self.checks_grad_norm = not grad_scaler_enabled
        fused = bool(optimizer.defaults.get("fused"))
        self.reads_every_step = context.is_distributed or grad_scaler_enabled or not fused
        self._healthy = torch.ones((), dtype=torch.bool, device=context.device)
        self._pending: list[tuple[int, torch.Tensor, torch.Tensor]] = []

    def record(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        """Keep step `step`'s values; on the device, a non-finite one latches the skip of this and later updates."""
        self._pending.append((step, loss.detach(), grad_norm.detach()))
        if not self.reads_every_step:
            self._healthy &= torch.isfinite(loss) & torch.isfinite(grad_norm)

    def skip_flag(self) -> Optional[torch.Tensor]:
        """The fused optimizer's `found_inf`: 1.0 once a step went bad (None where every step is read first)."""
        if self.reads_every_step:
            return None
        return (~self._healthy).to(torch.float32)

    def read(self, stop: bool = False, over_time: bool = False) -> Reading:
        """Every pending value in one host sync (one all-reduce under torchrun, which also agrees on stopping)."""
        pending, self._pending = self._pending, []
        values = torch.stack([torch.stack([loss.float(), grad_norm.float()]) for _, loss, grad_norm in pending])
        flags = torch.tensor([float(stop), float(over_time)], device=values.device)
        combined = torch.cat([values.reshape(-1), flags])
        if self.context.is_distributed:
            dist.all_reduce(combined)
        numbers = combined.tolist()
        world_size = self.context.world_size
        rows = [(numbers[2 * index] / world_size, numbers[2 * index + 1] / world_size) for index in range(len(pending))]
        stops, over = numbers[-2:]
        for (step, _, _), (loss, grad_norm) in zip(pending, rows):
            if not math.isfinite(loss) or (self.checks_grad_norm and not math.isfinite(grad_norm)):
                return Reading(step, loss, grad_norm, diverged=True, stop=stops > 0, over_time=over > 0)
        loss, grad_norm = rows[-1]
        return Reading(pending[-1][0], loss, grad_norm, diverged=False, stop=stops > 0, over_time=over > 0)
