"""Plain mode: one line of text per event, for CI logs, `| tee` and NO_COLOR terminals."""

from __future__ import annotations

from typing import Optional

from rich.console import Console
from rich.text import Text

from hellogpt.dashboard.formatting import (
    format_count,
    format_duration,
    format_learning_rate,
    format_loss,
    format_mfu,
    format_rate,
    mfu_basis,
)
from hellogpt.dashboard.records import run_directory
from hellogpt.dashboard.state import RunState
from hellogpt.train.events import (
    CheckpointEvent,
    EvalEvent,
    RunFinished,
    RunStarted,
    StepEvent,
    StepProgress,
    TrainingEvent,
)

SAMPLE_CHARACTERS_SHOWN = 160
SEPARATOR = " | "


def format_run_started(event: RunStarted) -> str:
    return SEPARATOR.join(
        [
            f"run {event.run_name}",
            f"profile {event.profile or '-'}",
            f"device {event.device}",
            f"dtype {event.dtype}",
            f"{format_count(event.n_params)} parameters",
            f"dataset {format_count(event.dataset_tokens)} tokens",
            f"steps {event.start_step} -> {event.max_iters}",
            f"MFU vs {mfu_basis(event.config)}",
        ]
    )


def format_step(event: StepEvent, max_steps: Optional[int]) -> str:
    step = f"step {event.step}/{max_steps}" if max_steps else f"step {event.step}"
    return SEPARATOR.join(
        [
            step,
            f"loss {format_loss(event.loss)}",
            f"lr {format_learning_rate(event.learning_rate)}",
            f"grad norm {event.grad_norm:.3f}",
            f"{event.ms_per_step:.1f} ms/step",
            f"{format_rate(event.tokens_per_second)} tokens/s",
            f"MFU {format_mfu(event.mfu)}",
        ]
    )


def format_eval(event: EvalEvent) -> str:
    return SEPARATOR.join(
        [
            f"eval step {event.step}",
            f"train loss {format_loss(event.train_loss)}",
            f"val loss {format_loss(event.val_loss)}",
            f"best val {format_loss(event.best_val_loss)}",
        ]
    )


def format_sample(event: EvalEvent) -> Optional[str]:
    """The eval sample on one line: newlines shown as \\n, long text cut."""
    if not event.sample:
        return None
    text = event.sample.replace("\\", "\\\\").replace("\r", "").replace("\n", "\\n").replace("\t", " ")
    text = "".join(char for char in text if char.isprintable())
    if len(text) > SAMPLE_CHARACTERS_SHOWN:
        text = text[:SAMPLE_CHARACTERS_SHOWN] + "..."
    return f"sample step {event.step}{SEPARATOR}{text}"


def format_progress(event: StepProgress) -> str:
    """Where a long step or evaluation is: `step 13 | micro-batch 4/10 | 0:46` (or `eval step 200 | batch ...`)."""
    if event.phase == "eval":
        where = f"eval step {event.step}{SEPARATOR}batch {event.done + 1}/{event.total}"
    else:
        where = f"step {event.step}{SEPARATOR}micro-batch {event.done + 1}/{event.total}"
    return f"{where}{SEPARATOR}{format_duration(event.elapsed_seconds)} so far"


def format_checkpoint(event: CheckpointEvent) -> str:
    return f"checkpoint step {event.step}{SEPARATOR}saved {event.path} ({event.reason})"


def format_finished(event: RunFinished, checkpoint_paths: list[str]) -> str:
    return SEPARATOR.join(
        [
            f"finished {event.reason} at step {event.step}",
            f"best val {format_loss(event.best_val_loss)}",
            f"wall {format_duration(event.wall_seconds)}",
            f"{format_count(event.tokens_seen)} tokens",
            f"{format_rate(event.tokens_per_second)} tokens/s",
            f"checkpoints {', '.join(checkpoint_paths) or '-'}",
        ]
    )


def format_event(event: TrainingEvent, state: RunState) -> list[str]:
    """The plain lines for one event (`state` already updated with it)."""
    if isinstance(event, RunStarted):
        return [format_run_started(event)]
    if isinstance(event, StepEvent):
        return [format_step(event, state.max_steps)]
    if isinstance(event, EvalEvent):
        sample = format_sample(event)
        return [format_eval(event)] + ([sample] if sample else [])
    if isinstance(event, StepProgress):
        return [format_progress(event)]
    if isinstance(event, CheckpointEvent):
        return [format_checkpoint(event)]
    if isinstance(event, RunFinished):
        lines = [format_finished(event, state.all_checkpoint_paths())]
        return lines + ([f"note{SEPARATOR}{event.message}"] if event.message else [])
    return []


class PlainView:
    """Writes each event as plain lines as soon as it arrives; no colour, no cursor movement."""

    def __init__(self, console: Console, state: RunState, *, run_records: bool = True) -> None:
        self.console = console
        self.state = state
        self.run_records = run_records

    def __enter__(self) -> "PlainView":
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def handle(self, event: TrainingEvent) -> None:
        for line in format_event(event, self.state):
            self.write_line(line)
        if isinstance(event, RunFinished) and self.run_records and self.state.started is not None:
            self.write_line(f"run records{SEPARATOR}{run_directory(self.state.started)}")

    def write_line(self, line: str) -> None:
        self.console.print(Text(line), soft_wrap=True, highlight=False, markup=False, emoji=False)
