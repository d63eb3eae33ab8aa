"""Shows a training run: the live dashboard on a terminal, plain lines elsewhere, and the run records.

`display_training` is the one entry point: the CLI hands it the run's events, it pulls them (the run trains in
this thread), shows them and returns the final `RunFinished`. Stopping is not its business: the CLI owns the
signals and asks the run to stop; a KeyboardInterrupt that does reach the display (a second Ctrl-C) ends it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Optional, Protocol

from rich.console import Console

from hellogpt.dashboard.live import LiveView
from hellogpt.dashboard.plain import PlainView
from hellogpt.dashboard.records import RunRecorder
from hellogpt.dashboard.state import RunState
from hellogpt.dashboard.tensorboard import TensorBoardLogger
from hellogpt.train.events import RunEnd, RunFinished, TrainingEvent


class View(Protocol):
    """What shows the events: entered around the run, told each event after the shared `RunState` has it."""

    def __enter__(self) -> "View": ...

    def __exit__(
        self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException], traceback: Optional[TracebackType]
    ) -> None: ...

    def handle(self, event: TrainingEvent) -> None: ...


class EventSink(Protocol):
    """Anything that consumes the stream next to the view: run records, TensorBoard."""

    def handle(self, event: TrainingEvent) -> None: ...

    def close(self) -> None: ...


def display_training(
    events: Iterable[TrainingEvent],
    *,
    plain: Optional[bool] = None,
    console: Optional[Console] = None,
    run_records: bool = True,
    tensorboard: bool = False,
) -> RunFinished:
    """Consume `events` until RunFinished, showing them live or as plain lines, and write the run records.

    If a KeyboardInterrupt escapes the run (a second Ctrl-C), the summary is still shown and the interrupt re-raised.
    """
    console = console or Console()
    state = RunState()
    sinks = _open_sinks(run_records, tensorboard)
    view = _choose_view(plain, console, state, run_records)
    try:
        with view:
            finished = _consume(iter(events), state, view, sinks)
    finally:
        for sink in sinks:
            sink.close()
    return finished


def wants_plain_output(plain: Optional[bool], console: Console) -> bool:
    """Plain when asked for, when output is not a terminal, or with NO_COLOR / TERM=dumb."""
    if plain is not None:
        return plain
    if os.environ.get("NO_COLOR") or os.environ.get("TERM", "").lower() == "dumb":
        return True
    return not console.is_terminal or console.is_dumb_terminal


def _choose_view(plain: Optional[bool], console: Console, state: RunState, run_records: bool) -> View:
    if wants_plain_output(plain, console):
        return PlainView(console, state, run_records=run_records)
    return LiveView(console, state, run_records=run_records)


def _open_sinks(run_records: bool, tensorboard: bool) -> list[EventSink]:
    sinks: list[EventSink] = []
    if tensorboard:
        sinks.append(TensorBoardLogger())
    if run_records:
        sinks.append(RunRecorder())
    return sinks


def _consume(events: Iterator[TrainingEvent], state: RunState, view: View, sinks: list[EventSink]) -> RunFinished:
    """Pull events until RunFinished; a stream that ends without one, or a Ctrl-C that ends it, gets a stand-in."""
    try:
        for event in events:
            _dispatch(event, state, view, sinks)
            if isinstance(event, RunFinished):
                return event
    except KeyboardInterrupt:
        _dispatch(state.stand_in_finish(RunEnd.INTERRUPTED, "interrupted before the loop could finish"), state, view, sinks)
        raise
    finished = state.stand_in_finish(RunEnd.INCOMPLETE, "the training loop stopped without a summary")
    _dispatch(finished, state, view, sinks)
    return finished


def _dispatch(event: TrainingEvent, state: RunState, view: View, sinks: list[EventSink]) -> None:
    state.update(event)
    view.handle(event)
    for sink in sinks:
        sink.handle(event)
