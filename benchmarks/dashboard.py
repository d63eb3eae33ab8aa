"""Dashboard overhead: step time of the real quickstart loop under the live dashboard vs plain lines.

The quickstart model (4x128, char tokenizer, batch 32 x 128) trains on tinyshakespeare on the CPU
three ways, interleaved: events consumed by nothing, by the plain log, and by the live dashboard
(rich Live on a terminal console writing to memory, the hardware sampler running). The time
between two StepEvents, as the consumer sees it, includes everything the display does.
Also times one full dashboard frame, which rich redraws at most 4 times a second.

    python benchmarks/dashboard.py [--quick] [--steps N] [--log-interval N] [--repeats N]
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from rich.console import Console
from rich.live import Live
from rich.table import Table

from hellogpt.config.layers import resolve_config
from hellogpt.dashboard import display_training
from hellogpt.dashboard.live import REFRESHES_PER_SECOND, LiveView
from hellogpt.dashboard.state import RunState
from hellogpt.data.prepare import prepare_dataset
from hellogpt.train.events import EvalEvent, RunStarted, StepEvent, TrainingEvent
from hellogpt.train.loop import train

REPO_ROOT = Path(__file__).resolve().parents[1]
WARMUP_INTERVALS = 2


def shakespeare_path() -> Path:
    """The whole tiny Shakespeare when ../shared/data is beside the repository, else the tests' 100 KB slice of it."""
    whole = REPO_ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
    return whole if whole.is_file() else REPO_ROOT / "tests" / "fixtures" / "tinyshakespeare.txt"


@dataclass
class RunTiming:
    """One run: seconds per step between StepEvents, and what the display cost on each thread."""

    seconds_per_step: list[float] = field(default_factory=list)
    consumer_seconds: float = 0.0
    redraw_cpu_seconds: float = 0.0
    frames: int = 0
    steps: int = 0
    wall_seconds: float = 0.0


def timed_run(
    data_dir: Path, work_dir: Path, steps: int, log_interval: int, consume: Callable[[Iterator[TrainingEvent]], object]
) -> RunTiming:
    """Train the quickstart model for `steps` under `consume`, timing the loop and the display apart."""
    resolved = resolve_config(
        "quickstart",
        [],
        [
            f"train.max_iters={steps}",
            f"train.log_interval={log_interval}",
            f"train.eval_interval={steps}",
            "train.eval_iters=2",
            f"train.runs_dir={work_dir / 'runs'}",
            "sample.max_new_tokens=8",
            "system.device=cpu",
            "system.compile=false",
        ],
    )
    timing = RunTiming(steps=steps)
    stamps: list[tuple[int, float]] = []

    def timed(events: Iterator[TrainingEvent]) -> Iterator[TrainingEvent]:
        for event in events:
            if isinstance(event, StepEvent):
                stamps.append((event.step, time.perf_counter()))
            handed_over = time.perf_counter()
            yield event  # the display handles the event before asking for the next one
            timing.consumer_seconds += time.perf_counter() - handed_over

    original_refresh = Live.refresh

    def counted_refresh(live: Live) -> None:
        started = time.thread_time()
        original_refresh(live)
        timing.redraw_cpu_seconds += time.thread_time() - started
        timing.frames += 1

    Live.refresh = counted_refresh  # type: ignore[method-assign]
    try:
        started = time.perf_counter()
        consume(timed(train(resolved, data_dir=data_dir, checkpoint_path=work_dir / "bench.pt", run_name="bench")))
        timing.wall_seconds = time.perf_counter() - started
    finally:
        Live.refresh = original_refresh  # type: ignore[method-assign]
    timing.seconds_per_step = [
        (later_time - earlier_time) / (later_step - earlier_step)
        for (earlier_step, earlier_time), (later_step, later_time) in zip(stamps, stamps[1:])
    ][WARMUP_INTERVALS:]
    return timing


def consume_nothing(events: Iterator[TrainingEvent]) -> None:
    for _ in events:
        pass


def consume_plain(events: Iterator[TrainingEvent]) -> None:
    display_training(events, plain=True, console=Console(file=io.StringIO(), width=100))


def consume_live(events: Iterator[TrainingEvent]) -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=100, height=40)
    display_training(events, plain=False, console=console)


def frame_milliseconds(repeats: int = 30) -> float:
    """Median time to render the whole dashboard with 1000 logged steps and 4 evals."""
    console = Console(file=io.StringIO(), force_terminal=True, width=100, height=40)
    state = RunState()
    view = LiveView(console, state, hardware_reader=lambda device: {"cpu_percent": 50.0, "process_rss_bytes": 2**29})
    events: list[TrainingEvent] = [RunStarted("bench", "quickstart", "cpu", "float32", 812_345, 10**6, 0, 1000, 4096, "x.pt")]
    for step in range(1, 1001):
        events.append(StepEvent(step, 4 / (1 + step / 100), 1e-3, 0.5, 50.0, 80_000.0, 0.01, 4096 * step, step * 0.05))
        if step % 250 == 0:
            events.append(EvalEvent(step, 4 / (1 + step / 100), 4.1 / (1 + step / 100), 1.0, "sample text\n" * 4))
    for event in events:
        state.update(event)
        view.handle(event)
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        console.print(view.render())
        timings.append((time.perf_counter() - started) * 1000)
    if view.sampler is not None:
        view.sampler.stop()
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 steps, logged every 5, once")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--log-interval", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    steps = args.steps or (30 if args.quick else 300)
    log_interval = args.log_interval or (5 if args.quick else 25)
    repeats = args.repeats or (1 if args.quick else 3)

    modes = {"none": consume_nothing, "plain": consume_plain, "live": consume_live}
    runs: dict[str, list[RunTiming]] = {name: [] for name in modes}
    with tempfile.TemporaryDirectory() as temporary:
        work_dir = Path(temporary)
        text_dir = work_dir / "text"
        text_dir.mkdir()
        (text_dir / "input.txt").write_text(shakespeare_path().read_text(encoding="utf-8"), encoding="utf-8")
        data_dir = work_dir / "data"
        prepare_dataset([str(text_dir)], data_dir, tokenizer="char")
        for _ in range(repeats):
            for name, consume in modes.items():  # interleaved, so drift in machine load hits every mode alike
                runs[name].append(timed_run(data_dir, work_dir, steps, log_interval, consume))

    plain_median = statistics.median(t for run in runs["plain"] for t in run.seconds_per_step)
    table = Table(title=f"Dashboard overhead: quickstart on the CPU, {steps} steps x {repeats}, log every {log_interval}")
    for column in ("display", "ms/step", "vs plain", "in loop ms/step", "redraw ms/s", "frames/s", "cost"):
        table.add_column(column, justify="left" if column == "display" else "right")
    for name, timings in runs.items():
        median = statistics.median(t for run in timings for t in run.seconds_per_step)
        total_steps = sum(run.steps for run in timings)
        wall = sum(run.wall_seconds for run in timings)
        consumer = sum(run.consumer_seconds for run in timings)
        redraw = sum(run.redraw_cpu_seconds for run in timings)
        frames = sum(run.frames for run in timings)
        table.add_row(
            name,
            f"{median * 1000:.1f}",
            f"{median / plain_median:.3f}x",
            f"{consumer / total_steps * 1000:.3f}",
            f"{redraw / wall * 1000:.1f}",
            f"{frames / wall:.2f}",
            f"{(consumer + redraw) / wall * 100:.2f}%",
        )
    frame = frame_milliseconds()
    console = Console()
    console.print(table)
    console.print(
        "ms/step: median between StepEvents (machine load moves it). in loop: time the display held the "
        "loop's thread per step. redraw: CPU time of the dashboard redraws per second of run. "
        "cost = (loop-thread time + redraw CPU time) / wall time, which load hardly moves."
    )
    console.print(f"one dashboard frame (1000 steps on the chart): {frame:.2f} ms, drawn at most {REFRESHES_PER_SECOND} times a second")


if __name__ == "__main__":
    main()
