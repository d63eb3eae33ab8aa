"""Ctrl-C and streams that end early: the summary is always shown, with the checkpoint path."""

from __future__ import annotations

import io
import signal
import threading
from pathlib import Path
from typing import Iterator

import pytest
from rich.console import Console

from hellogpt.cli.signals import StopOnSignals
from hellogpt.dashboard import display_training
from hellogpt.dashboard.plain import PlainView
from hellogpt.errors import UserError
from hellogpt.train.events import RunFinished, TrainingEvent

from tests.dashboard.synthetic import CHECKPOINT, RUN_NAME, run_events


def recording_console() -> Console:
    return Console(record=True, force_terminal=True, width=100, height=40, file=io.StringIO())


def interrupted_run(runs_dir: Path) -> Iterator[TrainingEvent]:
    """What the loop yields after Ctrl-C: it finishes the step, saves, and reports `interrupted`."""
    yield from run_events(runs_dir, max_iters=60, finish_reason=None)
    yield RunFinished(60, "interrupted", 3.1, 3.0, 245760, 81920.0, (CHECKPOINT,), "interrupted at step 60: saved")


def run_killed_by_ctrl_c(runs_dir: Path) -> Iterator[TrainingEvent]:
    """A loop that lets KeyboardInterrupt escape after its first checkpoint."""
    yield from run_events(runs_dir, max_iters=60, finish_reason=None)
    raise KeyboardInterrupt


def test_interrupted_run_shows_the_summary_with_the_checkpoint(tmp_path: Path) -> None:
    console = recording_console()
    finished = display_training(interrupted_run(tmp_path), plain=False, console=console)
    summary = console.export_text()
    assert finished.reason == "interrupted"
    assert f"run {RUN_NAME}: interrupted" in summary and CHECKPOINT in summary


def test_ctrl_c_escaping_the_loop_shows_the_summary_and_is_raised_again(tmp_path: Path) -> None:
    console = recording_console()
    with pytest.raises(KeyboardInterrupt):
        display_training(run_killed_by_ctrl_c(tmp_path), plain=False, console=console)
    summary = console.export_text()
    assert f"run {RUN_NAME}: interrupted" in summary and CHECKPOINT in summary
    assert (tmp_path / RUN_NAME / "loss.svg").exists()


def test_ctrl_c_while_the_display_draws_asks_the_run_to_stop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen_by_loop: list[str] = []
    stop = threading.Event()

    def loop_that_saves_when_asked_to_stop() -> Iterator[TrainingEvent]:
        for event in run_events(tmp_path, finish_reason=None):
            yield event
            if stop.is_set():
                seen_by_loop.append("interrupt")
                yield RunFinished(20, "interrupted", None, 1.0, 81920, 81920.0, (CHECKPOINT,))
                return

    original_handle = PlainView.handle

    def handle_then_ctrl_c(view: PlainView, event: TrainingEvent) -> None:
        original_handle(view, event)
        if view.state.current_step == 20 and not stop.is_set():
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(PlainView, "handle", handle_then_ctrl_c)
    output = io.StringIO()
    with StopOnSignals(stop.set):  # what the CLI wraps around the display
        finished = display_training(loop_that_saves_when_asked_to_stop(), plain=True, console=Console(file=output))
    assert seen_by_loop == ["interrupt"]
    assert finished.reason == "interrupted"
    assert "finished interrupted at step 20" in output.getvalue() and CHECKPOINT in output.getvalue()


def test_a_stream_without_run_finished_still_returns_one(tmp_path: Path) -> None:
    output = io.StringIO()
    finished = display_training(run_events(tmp_path, finish_reason=None), plain=True, console=Console(file=output))
    assert finished.reason == "incomplete" and finished.step == 100
    assert finished.checkpoint_paths == (CHECKPOINT,)


def test_a_failing_loop_stops_the_live_view_and_keeps_its_error(tmp_path: Path) -> None:
    def failing_loop() -> Iterator[TrainingEvent]:
        yield from run_events(tmp_path, max_iters=30, finish_reason=None)
        raise RuntimeError("boom")

    console = recording_console()
    with pytest.raises(RuntimeError, match="boom"):
        display_training(failing_loop(), plain=False, console=console)
    assert f"run {RUN_NAME}: failed" in console.export_text()
    assert (tmp_path / RUN_NAME / "metrics.jsonl").exists()


def test_an_error_before_the_run_starts_prints_no_summary() -> None:
    def loop_without_data() -> Iterator[TrainingEvent]:
        raise UserError("dataset data/x not found")
        yield  # a generator, like the real loop

    console = recording_console()
    with pytest.raises(UserError):
        display_training(loop_without_data(), plain=False, console=console, run_records=False)
    assert "failed" not in console.export_text()
