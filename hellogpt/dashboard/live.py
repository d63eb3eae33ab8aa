"""The live dashboard: a rich `Live` view redrawn at most 4 times a second, then a summary table.

The loop runs in the consuming thread, which only records each event. A redraw
thread draws the view 4 times a second while events arrive and once a second
otherwise (for the clock); the hardware sampler reads sensors on a third thread.
Neither ever makes the training step wait.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Optional

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from hellogpt.dashboard.formatting import (
    MISSING,
    format_bytes,
    format_count,
    format_duration,
    format_learning_rate,
    format_loss,
    format_mfu,
    format_rate,
    mfu_basis,
)
from hellogpt.dashboard.plots import TRAIN_STYLE, VAL_STYLE, LossChart
from hellogpt.dashboard.records import run_directory
from hellogpt.dashboard.sampler import HardwareReader, HardwareSampler, default_hardware_reader
from hellogpt.dashboard.state import RunState
from hellogpt.train.events import CheckpointEvent, EvalEvent, RunEnd, RunFinished, RunStarted, StepProgress, TrainingEvent

REFRESHES_PER_SECOND = 4
IDLE_REFRESH_SECONDS = 1.0
SAMPLE_LINES_SHOWN = 6
CHART_HEIGHT_LIMITS = (10, 16)  # at least the rows of the numbers table
ROWS_AROUND_CHART = 24
ROWS_WITHOUT_SAMPLE = 28


class LiveView:
    """Shows the run while it trains; on exit the live view gives way to the loss chart and a summary table."""

    def __init__(
        self,
        console: Console,
        state: RunState,
        *,
        hardware_reader: Optional[HardwareReader] = None,
        run_records: bool = True,
    ) -> None:
        self.console = console
        self.state = state
        self.hardware_reader = hardware_reader if hardware_reader is not None else default_hardware_reader()
        self.run_records = run_records
        self.sampler: Optional[HardwareSampler] = None
        self._chart: Optional[LossChart] = None
        self._chart_key: tuple[int, int, int] = (0, 0, 0)
        self._changed = threading.Event()
        self._stop_redrawing = threading.Event()
        self._redraw_thread: Optional[threading.Thread] = None
        self._live = Live(
            console=console,
            auto_refresh=False,
            transient=True,  # stdout/stderr writes (warnings) are shown above the view, which stays whole
            get_renderable=self.render,
        )

    def __enter__(self) -> "LiveView":
        self._live.start()
        self._redraw_thread = threading.Thread(target=self._redraw_loop, name="hellogpt-dashboard", daemon=True)
        self._redraw_thread.start()
        return self

    def __exit__(self, exc_type: Optional[type], exc: Optional[BaseException], traceback: object) -> None:
        self._stop_redrawing.set()
        if self._redraw_thread is not None:
            self._redraw_thread.join()
        if self.sampler is not None:
            self.sampler.stop()
        self._live.stop()
        if self.state.started is None:  # failed while setting up: the error says it all
            return
        finished = self.state.finished
        if finished is None and exc_type is not None:
            finished = self.state.stand_in_finish(RunEnd.FAILED, f"{exc_type.__name__}: {exc}")
        if finished is not None:
            self.console.print(self.final_report(finished))

    def handle(self, event: TrainingEvent) -> None:
        """Start the sampler on RunStarted; leave evals and checkpoints in the scrollback."""
        self._changed.set()
        if isinstance(event, RunStarted):
            # The event's device reads "cuda:0 x2" under torchrun; the sensors want the device alone.
            self.sampler = HardwareSampler(event.device.split()[0], self.hardware_reader)
            self.sampler.start()
        elif isinstance(event, EvalEvent):
            self.console.print(_eval_line(event), highlight=False)
        elif isinstance(event, CheckpointEvent):
            self.console.print(Text(f"  saved {event.path} at step {event.step} ({event.reason})", style="dim"))

    def _redraw_loop(self) -> None:
        """Redraw after events (at most 4 times a second) and once a second in between."""
        last_redraw = 0.0
        while not self._stop_redrawing.wait(1 / REFRESHES_PER_SECOND):
            now = time.monotonic()
            if self._changed.is_set() or now - last_redraw >= IDLE_REFRESH_SECONDS:
                self._changed.clear()
                self._live.refresh()
                last_redraw = now

    # ------------------------------------------------------------ rendering

    def render(self) -> RenderableType:
        """The whole dashboard from the current state (called on the redraw thread)."""
        if self.state.started is None:
            return Text("hellogpt: starting the run...", style="dim")
        parts: list[RenderableType] = [self.header(), self.progress(), self.middle(), self.hardware()]
        sample = self.sample()
        if sample is not None:
            parts.append(sample)
        # An empty last line holds the cursor: the terminal's "^C" echo lands there instead of
        # wrapping a full-width line, which would scroll the screen and leave a stale row behind.
        parts.append(Text(""))
        return Group(*parts)

    def header(self) -> RenderableType:
        started = self.state.started
        assert started is not None
        details = Text.assemble(
            ("profile ", "dim"), (started.profile or "-", "bold"),
            ("  device ", "dim"), (f"{started.device}/{started.dtype}", "bold"),
            ("  params ", "dim"), (format_count(started.n_params), "bold"),
            ("  dataset ", "dim"), (f"{format_count(started.dataset_tokens)} tokens", "bold"),
        )
        return Panel(details, title=f"[bold]hellogpt[/] · run [bold cyan]{started.run_name}[/]", title_align="left")

    def progress(self) -> RenderableType:
        state = self.state
        total = state.max_steps or 1
        step = state.current_step
        label = Text.assemble(
            (f" {step}/{total}", "bold"),
            f" {100 * step / total:3.0f}%",
            ("  elapsed ", "dim"), format_duration(state.elapsed_seconds()),
            ("  ETA ", "dim"), format_duration(state.eta_seconds()),
        )
        if state.in_progress is not None:
            label.append_text(_in_progress_text(state.in_progress))
        row = Table.grid(expand=True)
        row.add_column(ratio=1)
        row.add_column(no_wrap=True)
        row.add_row(ProgressBar(total=total, completed=step), label)
        return row

    def middle(self) -> RenderableType:
        chart_height = min(max(self.console.height - ROWS_AROUND_CHART, CHART_HEIGHT_LIMITS[0]), CHART_HEIGHT_LIMITS[1])
        chart = self._current_chart(chart_height)
        row = Table.grid(expand=True)
        row.add_column(ratio=1)
        row.add_column(width=31)
        panel_height = chart_height + 2
        row.add_row(
            Panel(chart, title=_chart_title(), title_align="left", height=panel_height),
            Panel(self.numbers(), title="training", title_align="left", height=panel_height),
        )
        return row

    def _current_chart(self, height: int) -> LossChart:
        """The chart for the points so far: drawn again only when a point arrives or the size changes."""
        key = (len(self.state.train_points), len(self.state.val_points), height)
        if self._chart is None or self._chart_key != key:
            self._chart = LossChart(self.state.train_points, self.state.val_points, height=height)
            self._chart_key = key
        return self._chart

    def numbers(self) -> Table:
        state = self.state
        step, last_eval = state.last_step, state.last_eval
        table = Table.grid(padding=(0, 1))
        table.add_column(style="dim", no_wrap=True)
        table.add_column(justify="right", no_wrap=True)
        table.add_row("train loss", Text(format_loss(step.loss if step else None), style=TRAIN_STYLE))
        table.add_row("  best", format_loss(state.best_train_loss))
        table.add_row("val loss", Text(format_loss(last_eval.val_loss if last_eval else None), style=VAL_STYLE))
        table.add_row("  best", Text(format_loss(state.best_val_loss), style="bold green"))
        table.add_row("tokens/s", format_rate(step.tokens_per_second if step else None))
        table.add_row("ms/step", f"{step.ms_per_step:.1f}" if step else MISSING)
        table.add_row("MFU", format_mfu(step.mfu if step else None))
        table.add_row("learning rate", format_learning_rate(step.learning_rate if step else None))
        table.add_row("grad norm", f"{step.grad_norm:.3f}" if step else MISSING)
        table.add_row("tokens seen", format_count(step.tokens_seen if step else None))
        return table

    def hardware(self) -> RenderableType:
        sampler = self.sampler
        if sampler is None or sampler.reader is None:
            body = Text("hardware readings unavailable", style="dim")
        elif sampler.latest is None:
            body = Text(sampler.error or "reading sensors...", style="dim")
        else:
            body = Text("  ").join(
                Text.assemble((f"{label} ", "dim"), (value, "bold")) for label, value in hardware_readings(sampler.latest)
            )
        started = self.state.started
        device = started.device if started else ""
        # MFU's basis beside the device it is about: the measured matmul peak, or the figure system.peak_flops sets.
        basis = f" · MFU vs {mfu_basis(started.config)}" if started else ""
        return Panel(body, title=f"hardware · {device}{basis}", title_align="left")

    def sample(self) -> Optional[RenderableType]:
        last_eval = self.state.last_eval
        if last_eval is None or not last_eval.sample:
            return None
        room = min(SAMPLE_LINES_SHOWN, self.console.height - ROWS_WITHOUT_SAMPLE)
        if room < 1:
            return None
        lines = last_eval.sample.strip("\n").splitlines()[:room]
        body = Text("\n".join(lines), overflow="ellipsis", no_wrap=True)
        return Panel(body, title=f"sample at step {last_eval.step}", title_align="left")

    # ------------------------------------------------------------ the end

    def final_report(self, finished: RunFinished) -> RenderableType:
        """What stays on screen: the final loss chart and the summary table."""
        chart = LossChart(self.state.train_points, self.state.val_points, height=CHART_HEIGHT_LIMITS[0] + 2)
        parts: list[RenderableType] = []
        if self.state.train_points or self.state.val_points:
            parts.append(Panel(chart, title=_chart_title(), title_align="left"))
        records_dir = run_directory(self.state.started) if self.run_records and self.state.started else None
        parts.append(summary_table(self.state, finished, records_dir))
        return Group(*parts)


def summary_table(state: RunState, finished: RunFinished, records_dir: Optional[Path] = None) -> Table:
    """Best val loss, wall time, tokens, throughput and where the checkpoints and records are."""
    name = state.started.run_name if state.started else "run"
    style = "green" if finished.reason == RunEnd.COMPLETED else "yellow"
    table = Table(title=f"run {name}: [{style}]{finished.reason}[/]", title_justify="left", show_header=False)
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column(overflow="fold")
    max_steps = state.max_steps
    table.add_row("steps", f"{finished.step}/{max_steps}" if max_steps else str(finished.step))
    table.add_row("best val loss", format_loss(finished.best_val_loss if finished.best_val_loss is not None else state.best_val_loss))
    table.add_row("last train loss", format_loss(state.last_step.loss if state.last_step else None))
    table.add_row("wall time", format_duration(finished.wall_seconds))
    table.add_row("tokens seen", format_count(finished.tokens_seen))
    table.add_row("throughput", f"{format_rate(finished.tokens_per_second)} tokens/s")
    table.add_row("checkpoints", "\n".join(state.all_checkpoint_paths()) or "none saved")
    if records_dir is not None:
        table.add_row("run records", str(records_dir))
    if finished.message:
        table.add_row("note", finished.message)
    return table


def hardware_readings(reading: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) pairs from `read_hardware_state`, in a fixed order; unknown keys are left out."""
    pairs: list[tuple[str, str]] = []

    def first(*keys: str) -> Any:
        return next((reading[key] for key in keys if reading.get(key) is not None), None)

    cpu = first("cpu_percent")
    if cpu is not None:
        pairs.append(("CPU", f"{cpu:.0f}%"))
    rss = first("process_rss_bytes", "rss_bytes")
    if rss is not None:
        pairs.append(("RSS", format_bytes(rss)))
    ram_used, ram_total = first("ram_used_bytes", "system_ram_used_bytes"), first("ram_total_bytes", "system_ram_total_bytes")
    if ram_used is not None:
        pairs.append(("RAM", _used_of_total(ram_used, ram_total)))
    gpu_util = first("gpu_util_percent", "gpu_utilization_percent")
    if gpu_util is not None:
        pairs.append(("GPU", f"{gpu_util:.0f}%"))
    gpu_used, gpu_total = first("gpu_memory_used_bytes"), first("gpu_memory_total_bytes")
    if gpu_used is not None:
        pairs.append(("GPU mem", _used_of_total(gpu_used, gpu_total)))
    temperature = first("gpu_temperature_c", "gpu_temperature_celsius")
    if temperature is not None:
        pairs.append(("temp", f"{temperature:.0f}°C"))
    power = first("gpu_power_w", "gpu_power_watts")
    if power is not None:
        pairs.append(("power", f"{power:.0f} W"))
    return pairs


def _used_of_total(used: float, total: Optional[float]) -> str:
    return format_bytes(used) if total is None else f"{format_bytes(used)}/{format_bytes(total)}"


def _in_progress_text(progress: StepProgress) -> Text:
    """Within a long step: which micro-batch (or eval batch) is running, short enough for 80 columns."""
    what = "eval" if progress.phase == "eval" else "micro-batch"
    return Text(f"  {what} {progress.done + 1}/{progress.total}", style="yellow")


def _chart_title() -> Text:
    return Text.assemble("loss  ", ("━ train", TRAIN_STYLE), "  ", ("━ val", VAL_STYLE))


def _eval_line(event: EvalEvent) -> Text:
    improved = event.val_loss <= event.best_val_loss
    return Text.assemble(
        (f"eval step {event.step}", "bold"),
        ("  train ", "dim"), (format_loss(event.train_loss), TRAIN_STYLE),
        ("  val ", "dim"), (format_loss(event.val_loss), VAL_STYLE),
        ("  best ", "dim"), (format_loss(event.best_val_loss), "bold green" if improved else ""),
    )
