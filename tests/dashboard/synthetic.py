"""A synthetic training run: the events a short real run would yield, with known numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional

from hellogpt.train.events import CheckpointEvent, EvalEvent, RunFinished, RunStarted, StepEvent, TrainingEvent

CHECKPOINT = "checkpoints/synthetic.pt"
RUN_NAME = "synthetic-run"
SAMPLE = "First Citizen:\nBefore we proceed any further, hear me speak."


def run_started(runs_dir: Path, start_step: int = 0, max_iters: int = 100) -> RunStarted:
    return RunStarted(
        run_name=RUN_NAME,
        profile="quickstart",
        device="cpu",
        dtype="float32",
        n_params=812_345,
        dataset_tokens=1_234_567,
        start_step=start_step,
        max_iters=max_iters,
        tokens_per_step=4096,
        checkpoint_path=CHECKPOINT,
        config={"model": {"n_layer": 4}, "train": {"runs_dir": str(runs_dir), "max_iters": max_iters}},
    )


def step_event(step: int) -> StepEvent:
    return StepEvent(
        step=step,
        loss=round(4.0 - step / 50, 4),
        learning_rate=2e-3,
        grad_norm=0.5,
        ms_per_step=40.0,
        tokens_per_second=102_400.0,
        mfu=0.0123,
        tokens_seen=4096 * step,
        elapsed_seconds=step * 0.04,
    )


def eval_event(step: int) -> EvalEvent:
    val_loss = round(4.1 - step / 50, 4)
    return EvalEvent(step=step, train_loss=val_loss - 0.1, val_loss=val_loss, best_val_loss=val_loss, sample=SAMPLE)


def run_events(
    runs_dir: Path,
    *,
    start_step: int = 0,
    max_iters: int = 100,
    log_interval: int = 10,
    eval_interval: int = 50,
    finish_reason: Optional[str] = "completed",
) -> Iterator[TrainingEvent]:
    """RunStarted, a StepEvent every `log_interval`, an eval and a checkpoint every `eval_interval`, RunFinished."""
    yield run_started(runs_dir, start_step, max_iters)
    for step in range(start_step + log_interval, max_iters + 1, log_interval):
        yield step_event(step)
        if step % eval_interval == 0:
            yield eval_event(step)
            yield CheckpointEvent(step=step, path=CHECKPOINT, reason="eval")
    if finish_reason is not None:
        yield RunFinished(
            step=max_iters,
            reason=finish_reason,
            best_val_loss=eval_event(max_iters).val_loss,
            wall_seconds=75.0,
            tokens_seen=4096 * max_iters,
            tokens_per_second=5461.0,
            checkpoint_paths=(CHECKPOINT,),
        )
