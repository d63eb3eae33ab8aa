"""What the training loop reports, as small frozen dataclasses.

The loop yields these and prints nothing; the live dashboard, the plain log,
the run records and the tests all consume the same stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional, Union


class RunEnd(str, Enum):
    """Why a run ended: the one vocabulary of the loop, the dashboard, the run records and `hellogpt train`.

    A `str` so that it compares equal to, and is written to the run records as, its value."""

    COMPLETED = "completed"
    TIME_BUDGET = "time_budget"
    INTERRUPTED = "interrupted"
    DIVERGED = "diverged"  # a NaN/inf loss or gradient norm
    INCOMPLETE = "incomplete"  # the event stream ended without a RunFinished (the dashboard's stand-in)
    FAILED = "failed"  # the loop raised while the live dashboard showed it

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class RunStarted:
    """Sent once, before the first step."""

    run_name: str
    profile: Optional[str]
    device: str
    dtype: str
    n_params: int
    dataset_tokens: int
    start_step: int
    max_iters: int
    tokens_per_step: int
    checkpoint_path: str
    config: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepEvent:
    """Sent every `log_interval` optimizer steps."""

    step: int
    loss: float
    learning_rate: float
    grad_norm: float
    ms_per_step: float
    tokens_per_second: float
    mfu: Optional[float]
    tokens_seen: int
    elapsed_seconds: float


@dataclass(frozen=True)
class EvalEvent:
    """Sent every `eval_interval` steps and at the end: losses averaged over `eval_iters` batches."""

    step: int
    train_loss: float
    val_loss: float
    best_val_loss: float
    sample: Optional[str] = None


@dataclass(frozen=True)
class CheckpointEvent:
    """Sent after a checkpoint file is completely written."""

    step: int
    path: str
    reason: str


@dataclass(frozen=True)
class StepProgress:
    """Sent during a long step or evaluation (every few seconds), so that a slow machine never looks stuck.

    `phase` is "train" (`done` of `total` micro-batches of step `step`) or "eval" (batches of both splits).
    """

    step: int
    phase: str
    done: int
    total: int
    elapsed_seconds: float


@dataclass(frozen=True)
class RunFinished:
    """Sent last, with why the run ended."""

    step: int
    reason: RunEnd
    best_val_loss: Optional[float]
    wall_seconds: float
    tokens_seen: int
    tokens_per_second: float
    checkpoint_paths: tuple[str, ...] = ()
    message: Optional[str] = None


TrainingEvent = Union[RunStarted, StepEvent, StepProgress, EvalEvent, CheckpointEvent, RunFinished]
