"""`--max-time` as a real budget: training stops early enough for the closing evaluation and save to fit."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional

import torch.nn as nn

# A forward pass costs about a third of forward + backward: eval batches are priced from train micro-steps.
FORWARD_SHARE_OF_STEP = 1 / 3
# Until a save has been timed, --max-time assumes the checkpoint is written this fast.
ASSUMED_SAVE_BYTES_PER_SECOND = 200e6
# Under --max-time the closing evaluation may take at most this share of the budget (it is cut to fit).
CLOSING_EVAL_SHARE = 0.1
# What a save writes per trained weight: the weight and AdamW's two moments.
SAVED_COPIES_PER_WEIGHT = 3


@dataclass
class TimeBudget:
    """The budget and the durations measured as the run goes; until the first evaluation its cost is
    estimated from the micro-step time (a forward pass is about a third of forward + backward)."""

    seconds: Optional[float] = None
    started: float = field(default_factory=time.perf_counter)
    micro_step_seconds: float = 0.0
    eval_batch_seconds: Optional[float] = None
    save_seconds: Optional[float] = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def remaining(self) -> float:
        return math.inf if self.seconds is None else self.seconds - self.elapsed()

    def cannot_fit(self, work_seconds: float, closing_seconds: float) -> bool:
        """True when `work_seconds` more, then the closing work, would run past the budget."""
        return self.seconds is not None and work_seconds + closing_seconds > self.remaining()

    def eval_batch_seconds_estimate(self) -> float:
        if self.eval_batch_seconds is not None:
            return self.eval_batch_seconds
        return self.micro_step_seconds * FORWARD_SHARE_OF_STEP

    def closing_eval_batches(self, wanted: int) -> int:
        """Eval batches per split for the closing evaluation: all of them, unless that would take more than
        CLOSING_EVAL_SHARE of the budget (a 10-minute run should not spend 8 minutes evaluating)."""
        batch = self.eval_batch_seconds_estimate()
        if self.seconds is None or batch <= 0:
            return wanted
        return max(1, min(wanted, int(CLOSING_EVAL_SHARE * self.seconds / (2 * batch))))

    def closing_seconds(self, wanted_batches: int, save_estimate: float) -> float:
        save = self.save_seconds if self.save_seconds is not None else save_estimate
        return 2 * self.closing_eval_batches(wanted_batches) * self.eval_batch_seconds_estimate() + save

    def affordable_eval_batches(self, wanted: int, save_estimate: float) -> int:
        """Eval batches per split that still fit (at least one): the closing evaluation is cut to fit."""
        batch = self.eval_batch_seconds_estimate()
        if self.seconds is None or batch <= 0:
            return wanted
        save = self.save_seconds if self.save_seconds is not None else save_estimate
        return max(1, min(self.closing_eval_batches(wanted), int((self.remaining() - save) / (2 * batch))))


def estimated_save_seconds(model: nn.Module) -> float:
    """Until a save is timed: trained weights and AdamW's two moments at a modest disk speed."""
    weight_bytes = sum(
        parameter.numel() * parameter.element_size() for parameter in model.parameters() if parameter.requires_grad
    )
    return SAVED_COPIES_PER_WEIGHT * weight_bytes / ASSUMED_SAVE_BYTES_PER_SECOND
