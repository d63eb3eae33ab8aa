"""Plain mode: one exact line per event, no escape codes, chosen automatically off a terminal."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from hellogpt.dashboard import display_training, wants_plain_output
from hellogpt.dashboard.plain import format_checkpoint, format_eval, format_finished, format_sample, format_step
from hellogpt.train.events import CheckpointEvent, RunFinished

from tests.dashboard.synthetic import CHECKPOINT, eval_event, run_events, step_event


def test_step_line_shows_step_loss_lr_speed_and_mfu() -> None:
    assert format_step(step_event(20), max_steps=100) == (
        "step 20/100 | loss 3.6000 | lr 2.00e-03 | grad norm 0.500 | 40.0 ms/step | 102,400 tokens/s | MFU 1.23%"
    )


def test_step_line_without_mfu_shows_a_dash() -> None:
    event = step_event(20)
    line = format_step(type(event)(**{**event.__dict__, "mfu": None}), max_steps=None)
    assert line.startswith("step 20 | ") and line.endswith("MFU -")


def test_eval_line_shows_train_val_and_best() -> None:
    assert format_eval(eval_event(50)) == "eval step 50 | train loss 3.0000 | val loss 3.1000 | best val 3.1000"


def test_sample_line_keeps_the_text_on_one_line() -> None:
    assert format_sample(eval_event(50)) == (
        "sample step 50 | First Citizen:\\nBefore we proceed any further, hear me speak."
    )


def test_checkpoint_line_names_the_file() -> None:
    event = CheckpointEvent(step=50, path="checkpoints/x.pt", reason="eval")
    assert format_checkpoint(event) == "checkpoint step 50 | saved checkpoints/x.pt (eval)"


def test_finished_line_summarises_the_run() -> None:
    event = RunFinished(100, "completed", 2.1, 75.0, 409600, 5461.0, (CHECKPOINT,))
    assert format_finished(event, [CHECKPOINT]) == (
        "finished completed at step 100 | best val 2.1000 | wall 1:15 | 409.60k tokens | 5,461 tokens/s"
        f" | checkpoints {CHECKPOINT}"
    )


def test_plain_run_prints_one_line_per_event_without_escape_codes(tmp_path: Path) -> None:
    output = io.StringIO()
    console = Console(file=output, force_terminal=True, color_system="truecolor", width=100)
    finished = display_training(run_events(tmp_path), plain=True, console=console)
    lines = output.getvalue().splitlines()
    assert "\x1b" not in output.getvalue()
    assert finished.reason == "completed"
    assert lines[0].startswith("run synthetic-run | profile quickstart | device cpu | dtype float32")
    assert sum(line.startswith("step ") for line in lines) == 10
    assert sum(line.startswith("eval step ") for line in lines) == 2
    assert sum(line.startswith("checkpoint step ") for line in lines) == 2
    assert lines[-2].startswith("finished completed at step 100 | best val 2.1000")
    assert lines[-1] == f"run records | {tmp_path / 'synthetic-run'}"


def test_plain_is_chosen_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    assert wants_plain_output(None, Console(file=io.StringIO()))
    assert not wants_plain_output(None, Console(file=io.StringIO(), force_terminal=True))


@pytest.mark.parametrize("variable, value", [("NO_COLOR", "1"), ("TERM", "dumb")])
def test_plain_is_chosen_with_no_color_or_a_dumb_terminal(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv(variable, value)
    assert wants_plain_output(None, Console(file=io.StringIO(), force_terminal=True))


def test_plain_flag_wins_over_a_terminal() -> None:
    console = Console(file=io.StringIO(), force_terminal=True)
    assert wants_plain_output(True, console)
    assert not wants_plain_output(False, Console(file=io.StringIO()))
