"""What the dashboard remembers about a run: the latest numbers and the loss history.

Both views and the final summary read this one object, so they always agree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

from hellogpt.train.events import (
    CheckpointEvent,
    EvalEvent,
    RunEnd,
    RunFinished,
    RunStarted,
    StepEvent,
    StepProgress,
    TrainingEvent,
)


@dataclass
class RunState:
    """Accumulates the event stream; `update` is the only writer."""

    started: Optional[RunStarted] = None
    last_step: Optional[StepEvent] = None
    last_eval: Optional[EvalEvent] = None
    # Within a long step or evaluation: how far it is; cleared when the step or evaluation ends.
    in_progress: Optional[StepProgress] = None
    finished: Optional[RunFinished] = None
    train_points: list[tuple[int, float]] = field(default_factory=list)
    val_points: list[tuple[int, float]] = field(default_factory=list)
    best_train_loss: Optional[float] = None
    best_val_loss: Optional[float] = None
    checkpoint_paths: list[str] = field(default_factory=list)
    clock_started: float = field(default_factory=time.monotonic)

    def update(self, event: TrainingEvent) -> None:
        self.in_progress = event if isinstance(event, StepProgress) else None
        if isinstance(event, RunStarted):
            self.started = event
            self.clock_started = time.monotonic()
        elif isinstance(event, StepEvent):
            self.last_step = event
            self.train_points.append((event.step, event.loss))
            self.best_train_loss = _lowest(self.best_train_loss, event.loss)
        elif isinstance(event, EvalEvent):
            self.last_eval = event
            self.val_points.append((event.step, event.val_loss))
            self.best_val_loss = _lowest(_lowest(self.best_val_loss, event.val_loss), event.best_val_loss)
        elif isinstance(event, CheckpointEvent):
            if event.path not in self.checkpoint_paths:
                self.checkpoint_paths.append(event.path)
        elif isinstance(event, RunFinished):
            self.finished = event

    @property
    def current_step(self) -> int:
        """The last completed step, from whichever event said so last (steps are logged every log_interval)."""
        known = [self.started.start_step if self.started else 0]
        if self.last_step is not None:
            known.append(self.last_step.step)
        if self.last_eval is not None:
            known.append(self.last_eval.step)
        if self.in_progress is not None:
            known.append(self.in_progress.step - (1 if self.in_progress.phase == "train" else 0))
        return max(known)

    @property
    def max_steps(self) -> Optional[int]:
        return self.started.max_iters if self.started else None

    def elapsed_seconds(self) -> float:
        """Wall time since RunStarted, as the loop measured it when known."""
        return time.monotonic() - self.clock_started

    def eta_seconds(self) -> Optional[float]:
        """Steps left times the latest step time."""
        if self.last_step is None or self.max_steps is None:
            return None
        remaining = max(self.max_steps - self.last_step.step, 0)
        return remaining * self.last_step.ms_per_step / 1000.0

    def stand_in_finish(self, reason: RunEnd, message: Optional[str] = None) -> RunFinished:
        """A RunFinished built from what was seen, for a stream that ended without one."""
        last = self.last_step
        wall = self.elapsed_seconds()
        tokens = last.tokens_seen if last else 0
        return RunFinished(
            step=self.current_step,
            reason=reason,
            best_val_loss=self.best_val_loss,
            wall_seconds=wall,
            tokens_seen=tokens,
            tokens_per_second=tokens / wall if wall > 0 else 0.0,
            checkpoint_paths=tuple(self.checkpoint_paths),
            message=message,
        )

    def all_checkpoint_paths(self) -> list[str]:
        """Checkpoints from CheckpointEvents and from RunFinished, in order, without repeats."""
        paths = list(self.checkpoint_paths)
        if self.finished is not None:
            paths += [path for path in self.finished.checkpoint_paths if path not in paths]
        return paths


def _lowest(current: Optional[float], candidate: Optional[float]) -> Optional[float]:
    if candidate is None or candidate != candidate:
        return current
    return candidate if current is None else min(current, candidate)
