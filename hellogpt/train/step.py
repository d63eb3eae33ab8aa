"""One optimizer step: the micro-batches' forward and backward passes, gradient clipping, and the update."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Generator, Optional

import numpy as np
import torch
import torch.nn as nn

from hellogpt.config.schema import OptimConfig
from hellogpt.hardware.devices import autocast_context
from hellogpt.train.batches import BatchSource
from hellogpt.train.budget import TimeBudget
from hellogpt.train.distributed import DistributedContext
from hellogpt.train.events import RunEnd, StepProgress
from hellogpt.train.progress import ProgressClock
from hellogpt.train.rng_state import capture_rng_state, generator_state
from hellogpt.train.optimizer import set_learning_rates

@dataclass(frozen=True)
class StepOutcome:
    """The accumulated gradients' step: mean loss and gradient norm as device tensors (read later, together),
    or, when a stop or the budget arrived between micro-batches, why it was dropped."""

    loss: Optional[torch.Tensor] = None
    grad_norm: Optional[torch.Tensor] = None
    dropped: Optional[RunEnd] = None  # INTERRUPTED (a stop request) or TIME_BUDGET


@dataclass
class UpdateStep:
    """Takes optimizer steps; remembers the sampler and RNG states at the start of the step in flight, which is
    what a save in the middle of it records (so that a dropped step leaves no trace)."""

    model: nn.Module
    forward_model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    batches: BatchSource
    data_rng: np.random.Generator
    context: DistributedContext
    dtype: torch.dtype
    accumulation_steps: int
    optim: OptimConfig
    start_states: Optional[tuple[dict[str, Any], dict[str, Any]]] = None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return autocast_context(self.context.device, self.dtype)

    def run(
        self, step: int, stop_requested: Callable[[], bool], budget: TimeBudget, closing_seconds: Callable[[], float]
    ) -> Generator[StepProgress, None, StepOutcome]:
        """The micro-batches of step `step + 1`, reporting progress in long ones. A stop between micro-batches drops
        the step (`stop_requested` is agreed among ranks, so all drop it before the gradient all-reduce); so does the
        end of the budget in a single process (ranks agree on the budget only at the end of a step)."""
        set_learning_rates(self.optimizer, step, self.optim)
        self.start_states = (generator_state(self.data_rng), capture_rng_state())
        may_run_out = not self.context.is_distributed
        total_loss = torch.zeros((), device=self.context.device)
        clock = ProgressClock()
        next_batch = None
        for micro_step in range(self.accumulation_steps):
            if micro_step:
                budget.micro_step_seconds = clock.elapsed() / micro_step
            if self.context.is_main and clock.due():
                yield StepProgress(step + 1, "train", micro_step, self.accumulation_steps, clock.elapsed())
            if stop_requested():
                return StepOutcome(dropped=RunEnd.INTERRUPTED)
            rest_of_step = budget.micro_step_seconds * (self.accumulation_steps - micro_step)
            if may_run_out and budget.cannot_fit(rest_of_step, closing_seconds()):
                return StepOutcome(dropped=RunEnd.TIME_BUDGET)
            if next_batch is None:
                next_batch = self.batches.batch("train", self.data_rng)
            inputs, targets = next_batch
            is_last = micro_step == self.accumulation_steps - 1
            # Gradients are all-reduced only on the micro-step that precedes the update.
            sync = contextlib.nullcontext() if is_last or not self.context.is_distributed else self.forward_model.no_sync()
            with sync:
                with self.autocast():
                    _, loss = self.forward_model(inputs, targets)
                    loss = loss / self.accumulation_steps
                if not is_last:
                    next_batch = self.batches.batch("train", self.data_rng)
                self.scaler.scale(loss).backward()
            total_loss += loss.detach()
        if self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)
        max_norm = self.optim.grad_clip if self.optim.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        budget.micro_step_seconds = clock.elapsed() / self.accumulation_steps
        return StepOutcome(loss=total_loss, grad_norm=grad_norm)

    def apply(self, skip: Optional[torch.Tensor]) -> None:
        """The update, skipped on the device when `skip` holds 1.0 (the fused AdamW's `found_inf`)."""
        if skip is not None:
            self.optimizer.found_inf = skip  # type: ignore[attr-defined]
        try:
            self.scaler.step(self.optimizer)
        finally:
            if skip is not None:
                del self.optimizer.found_inf  # type: ignore[attr-defined]
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.start_states = None

    def drop(self) -> None:
        """Forget a partial accumulation; the next step starts from the states this one started from."""
        self.optimizer.zero_grad(set_to_none=True)

    def states_to_save(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Sampler and RNG states as a checkpoint records them: the step in flight's start, else the current ones."""
        return self.start_states or (generator_state(self.data_rng), capture_rng_state())
