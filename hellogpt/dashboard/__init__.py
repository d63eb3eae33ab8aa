"""Shows a training run: the live dashboard on a terminal, plain lines elsewhere, and the run records.

`display_training` is the one entry point: the CLI hands it the loop's event
iterator, it pulls the events (the loop runs in this thread), shows them and
returns the final `RunFinished`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Optional, Protocol

from rich.console import Console

from hellogpt.dashboard.state import INTERRUPTED, STREAM_ENDED, RunState
from hellogpt.train.events import RunFinished, TrainingEvent


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

    A KeyboardInterrupt raised outside the loop is passed into it (so it can save and finish);
    if the loop lets it escape, the summary is still shown and the interrupt re-raised.
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


def _choose_view(plain: Optional[bool], console: Console, state: RunState, run_records: bool):
    if wants_plain_output(plain, console):
        from hellogpt.dashboard.plain import PlainView

        return PlainView(console, state, run_records=run_records)
    from hellogpt.dashboard.live import LiveView

    return LiveView(console, state, run_records=run_records)


def _open_sinks(run_records: bool, tensorboard: bool) -> list[EventSink]:
    sinks: list[EventSink] = []
    if tensorboard:
        from hellogpt.dashboard.tensorboard import TensorBoardLogger

        sinks.append(TensorBoardLogger())
    if run_records:
        from hellogpt.dashboard.records import RunRecorder

        sinks.append(RunRecorder())
    return sinks


def _consume(iterator: Iterator[TrainingEvent], state: RunState, view, sinks: list[EventSink]) -> RunFinished:
    """Pull events until RunFinished; route a stray Ctrl-C into the loop so it can save."""
    interrupted_here = False
    while True:
        try:
            event = _next_event(iterator, interrupted_here)
            interrupted_here = False
            if event is None:
                return _finish(state.stand_in_finish(STREAM_ENDED, "the training loop stopped without a summary"), view, sinks, state)
            _dispatch(event, state, view, sinks)
            if isinstance(event, RunFinished):
                return event
        except KeyboardInterrupt:
            if interrupted_here or not hasattr(iterator, "throw"):
                _finish(state.stand_in_finish(INTERRUPTED, "interrupted before the loop could finish"), view, sinks, state)
                raise
            interrupted_here = True


def _next_event(iterator: Iterator[TrainingEvent], pass_interrupt: bool) -> Optional[TrainingEvent]:
    """The next event, or None at the end; with `pass_interrupt`, Ctrl-C is raised inside the loop first."""
    try:
        if pass_interrupt:
            return iterator.throw(KeyboardInterrupt())  # type: ignore[attr-defined]
        return next(iterator)
    except StopIteration:
        return None


def _dispatch(event: TrainingEvent, state: RunState, view, sinks: list[EventSink]) -> None:
    state.update(event)
    view.handle(event)
    for sink in sinks:
        sink.handle(event)


def _finish(finished: RunFinished, view, sinks: list[EventSink], state: RunState) -> RunFinished:
    _dispatch(finished, state, view, sinks)
    return finished
