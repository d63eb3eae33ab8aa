"""Stopping a run never loses work: Ctrl-C between micro-batches, on an eval step, on the last step, and the best model kept."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Callable, Optional

import pytest
import torch

from hellogpt.checkpoints.format import load_checkpoint
from hellogpt.checkpoints.paths import latest_checkpoint_path
from hellogpt.cli.signals import StopOnSignals
from hellogpt.train import progress
from hellogpt.train.events import CheckpointEvent, EvalEvent, RunFinished, RunStarted, StepEvent, StepProgress, TrainingEvent
from hellogpt.train.loop import TrainingRun, train
from hellogpt.train.resume import resume_source
from tests.train.conftest import events_of, tiny_config

StopWhen = Callable[[TrainingEvent], bool]


def run_until(resolved, data_dir: Path, checkpoint: Path, stop_when: Optional[StopWhen] = None, **options) -> list:
    """Run the loop as the CLI does, Ctrl-C its stop button; when `stop_when(event)` holds, press Ctrl-C
    (SIGINT to this process) once."""
    events = []
    pressed = False
    run = TrainingRun(resolved, data_dir=data_dir, checkpoint_path=checkpoint, **options)
    with run, StopOnSignals(run.request_stop):
        for event in run.events():
            events.append(event)
            if stop_when is not None and not pressed and stop_when(event):
                pressed = True
                signal.raise_signal(signal.SIGINT)
    return events


@pytest.fixture
def progress_every_micro_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Progress events at every micro-batch, so a test can press Ctrl-C inside a step."""
    monkeypatch.setattr(progress, "PROGRESS_AFTER_SECONDS", 0.0)
    monkeypatch.setattr(progress, "PROGRESS_EVERY_SECONDS", 0.0)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).model


def test_ctrl_c_between_micro_batches_drops_the_partial_step_and_resume_is_exact(
    char_dataset: Path, tmp_path: Path, progress_every_micro_batch: None
) -> None:
    straight = tmp_path / "straight.pt"
    run_until(tiny_config(), char_dataset, straight)
    split = tmp_path / "split.pt"
    in_step_6 = lambda event: isinstance(event, StepProgress) and event.phase == "train" and (event.step, event.done) == (6, 1)
    events = run_until(tiny_config(), char_dataset, split, in_step_6)
    assert events[-1].reason == "interrupted" and events[-1].step == 5  # step 6 was half done: dropped
    assert [event.step for event in events_of(CheckpointEvent, events)] == [4, 5]
    assert load_checkpoint(split).step == 5
    resumed = run_until(tiny_config(), char_dataset, split, resume=True)
    assert resumed[0].start_step == 5 and resumed[-1].reason == "completed"
    for name, tensor in weights(straight).items():
        assert torch.equal(tensor, weights(split)[name]), name


def test_ctrl_c_on_an_eval_step_runs_that_evaluation_first_on_resume(char_dataset: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "tiny.pt"
    events = run_until(tiny_config(), char_dataset, checkpoint, lambda event: isinstance(event, StepEvent) and event.step == 4)
    assert events[-1].reason == "interrupted" and not events_of(EvalEvent, events)
    assert load_checkpoint(checkpoint).pending_eval
    resumed = run_until(tiny_config(), char_dataset, checkpoint, resume=True)
    assert [event.step for event in events_of(EvalEvent, resumed)] == [4, 8]
    assert events_of(StepEvent, resumed)[0].step == 5


def test_ctrl_c_on_the_last_step_still_finishes_the_run_on_resume(char_dataset: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "tiny.pt"
    events = run_until(tiny_config(), char_dataset, checkpoint, lambda event: isinstance(event, StepEvent) and event.step == 8)
    assert events[-1].reason == "interrupted" and events[-1].step == 8
    resumed = run_until(tiny_config(), char_dataset, checkpoint, resume=True)
    final_evals = events_of(EvalEvent, resumed)
    assert [event.step for event in final_evals] == [8] and final_evals[0].sample
    assert resumed[-1].reason == "completed" and not events_of(StepEvent, resumed)
    assert not load_checkpoint(checkpoint).pending_eval


def test_ctrl_c_keeps_the_best_model_and_writes_the_latest_state_beside_it(char_dataset: Path, tmp_path: Path) -> None:
    config = tiny_config("train.always_save_checkpoint=false")
    best = tmp_path / "tiny.pt"
    written: dict[int, bytes] = {}

    def stop_at_6(event: TrainingEvent) -> bool:
        if isinstance(event, CheckpointEvent) and event.path == str(best):
            written[event.step] = best.read_bytes()
        return isinstance(event, StepEvent) and event.step == 6

    events = run_until(config, char_dataset, best, stop_at_6)
    latest = latest_checkpoint_path(best)
    assert latest.name == "tiny.latest.pt"
    assert best.read_bytes() == written[4]  # the best (step 4) is untouched
    assert load_checkpoint(latest).step == 6 and events_of(CheckpointEvent, events)[-1].path == str(latest)
    assert "the best model stays in" in (events[-1].message or "")
    assert resume_source(best) == latest
    resumed = run_until(config, char_dataset, best, resume=True)
    assert resumed[0].start_step == 6 and resumed[-1].reason == "completed"
    assert max(load_checkpoint(path).step for path in (best, latest) if path.exists()) == 8


def test_a_new_best_replaces_an_older_latest_state(char_dataset: Path, tmp_path: Path) -> None:
    config = tiny_config("train.always_save_checkpoint=false", "optim.learning_rate=3e-3", "train.max_iters=12")
    best = tmp_path / "tiny.pt"
    run_until(config, char_dataset, best, lambda event: isinstance(event, StepEvent) and event.step == 6)
    resumed = run_until(config, char_dataset, best, resume=True)
    assert latest_checkpoint_path(best).exists() is False  # step 8's new best made the step-6 state stale
    assert [(event.step, event.reason) for event in events_of(CheckpointEvent, resumed)] == [(8, "best"), (12, "best")]
    assert resume_source(best) == best and load_checkpoint(best).step == 12


def test_a_validation_split_too_short_for_one_window_is_refused_before_the_first_step(
    char_dataset: Path, tmp_path: Path
) -> None:
    (char_dataset / "val.bin").write_bytes((char_dataset / "val.bin").read_bytes()[: 2 * 20])
    from hellogpt.errors import UserError

    events: list = []
    with pytest.raises(UserError, match=r"the val split of .* has 20 tokens, fewer than block_size \+ 1 = 33"):
        for event in train(tiny_config(), data_dir=char_dataset, checkpoint_path=tmp_path / "tiny.pt"):
            events.append(event)
    assert not events and not (tmp_path / "tiny.pt").exists()
