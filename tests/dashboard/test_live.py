"""The live dashboard, rendered into a recording console: the numbers a user reads off it."""

from __future__ import annotations

import io
import threading
import dataclasses
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from hellogpt.dashboard import display_training
from hellogpt.dashboard.live import LiveView
from hellogpt.dashboard.plots import LossChart
from hellogpt.dashboard.state import RunState

from tests.dashboard.synthetic import CHECKPOINT, RUN_NAME, run_events, run_started

BRAILLE = range(0x2801, 0x2900)
# Waits end as soon as their event happens; this long only guards against a hang.
HANG_GUARD_SECONDS = 60


def recording_console(width: int = 100, height: int = 40) -> Console:
    return Console(record=True, force_terminal=True, width=width, height=height, file=io.StringIO())


def fixed_reading(device: str) -> dict[str, Any]:
    return {"cpu_percent": 37.0, "process_rss_bytes": 512 * 2**20, "ram_used_bytes": 6 * 2**30, "ram_total_bytes": 16 * 2**30}


def view_after(events, console: Console, reader=fixed_reading) -> LiveView:
    """A LiveView fed with `events` without starting rich's Live thread."""
    state = RunState()
    view = LiveView(console, state, hardware_reader=reader, run_records=False)
    for event in events:
        state.update(event)
        view.handle(event)
    return view


def rendered_text(view: LiveView, console: Console) -> str:
    console.print(view.render())
    return console.export_text()


def test_dashboard_shows_run_header_losses_speed_and_progress(tmp_path: Path) -> None:
    console = recording_console()
    events = list(run_events(tmp_path, max_iters=100, finish_reason=None))[:-2]  # stop at step 100, before its eval
    view = view_after(events, console)
    text = rendered_text(view, console)
    view.sampler.stop()
    assert f"run {RUN_NAME}" in text
    assert "profile quickstart" in text and "cpu/float32" in text and "812.35k" in text and "1.23M tokens" in text
    assert "100/100" in text and "100%" in text
    assert "train loss      2.0000" in text
    assert "val loss        3.1000" in text  # the eval at step 50
    assert "102,400" in text and "40.0" in text and "1.23%" in text and "2.00e-03" in text and "0.500" in text


def test_dashboard_shows_the_best_val_loss_and_the_eval_sample(tmp_path: Path) -> None:
    console = recording_console()
    view = view_after(list(run_events(tmp_path, finish_reason=None)), console)
    text = rendered_text(view, console)
    view.sampler.stop()
    best_row = text.splitlines()[[index for index, line in enumerate(text.splitlines()) if "val loss" in line][-1] + 1]
    assert "best" in best_row and "2.1000" in best_row
    assert "sample at step 100" in text and "Before we proceed any further" in text


def test_progress_shows_the_eta_from_the_step_time(tmp_path: Path) -> None:
    console = recording_console()
    events = list(run_events(tmp_path, max_iters=1000, log_interval=10, eval_interval=1000, finish_reason=None))[:26]
    view = view_after(events, console)  # step 250 of 1000 at 40 ms/step: 750 * 0.04 s = 30 s left
    text = rendered_text(view, console)
    view.sampler.stop()
    assert "250/1000" in text and "25%" in text and "ETA 0:30" in text


def test_hardware_panel_shows_the_sampled_readings(tmp_path: Path) -> None:
    console = recording_console()
    view = view_after(list(run_events(tmp_path, finish_reason=None))[:1], console)
    wait_for_first_reading(view)
    text = rendered_text(view, console)
    view.sampler.stop()
    assert "CPU 37%" in text and "RSS 512.0 MiB" in text and "RAM 6.0 GiB/16.0 GiB" in text


def test_the_sensors_of_a_torchrun_run_read_its_own_device(tmp_path: Path) -> None:
    readings: list[str] = []

    def recording_reader(device: str) -> dict[str, Any]:
        readings.append(device)
        return fixed_reading(device)

    started = dataclasses.replace(run_started(tmp_path), device="cuda:1 x2")
    view = view_after([started], recording_console(), recording_reader)
    wait_for_first_reading(view)
    view.sampler.stop()
    assert readings and set(readings) == {"cuda:1"}


def test_a_slow_sensor_never_blocks_the_consumer(tmp_path: Path) -> None:
    entered, release, returned = threading.Event(), threading.Event(), threading.Event()

    def stuck_reader(device: str) -> dict[str, Any]:
        entered.set()
        release.wait(HANG_GUARD_SECONDS)
        returned.set()
        return fixed_reading(device)

    console = recording_console()
    view = view_after(list(run_events(tmp_path, finish_reason=None)), console, reader=stuck_reader)
    text = rendered_text(view, console)
    stuck_while_shown = entered.wait(HANG_GUARD_SECONDS) and not returned.is_set()
    release.set()
    view.sampler.stop()
    assert stuck_while_shown  # the whole run was consumed and shown while the sensor was still stuck
    assert "reading sensors" in text


def test_loss_chart_fits_80_columns_and_draws_both_curves() -> None:
    console = recording_console(width=80)
    train = [(step, 4.0 - step / 400) for step in range(10, 1001, 10)]
    val = [(step, 4.1 - step / 400) for step in range(250, 1001, 250)]
    console.print(LossChart(train, val, height=12))
    lines = console.export_text().splitlines()
    assert len(lines) == 12
    assert all(len(line) <= 80 for line in lines)
    assert sum(ord(char) in BRAILLE for line in lines for char in line) > 60
    assert "3.5 ┤" in "".join(lines) and "1000" in lines[-1]


def test_chart_range_leaves_out_the_first_steps_high_loss() -> None:
    console = recording_console(width=80)
    train = [(0, 10.8)] + [(step, 4.0 - step / 1000) for step in range(10, 1001, 10)]
    console.print(LossChart(train, [], height=12))
    y_labels = [float(line.split("┤")[0]) for line in console.export_text().splitlines() if "┤" in line]
    assert max(y_labels) < 4.5 and min(y_labels) >= 2.9


def test_live_run_gives_way_to_a_summary_table(tmp_path: Path) -> None:
    console = recording_console()
    finished = display_training(run_events(tmp_path), plain=False, console=console)
    text = console.export_text()
    summary = text[text.rindex(f"run {RUN_NAME}: completed") :]
    assert finished.reason == "completed"
    for expected in ("best val loss   │ 2.1000", "wall time       │ 1:15", "409.60k", "5,461 tokens/s", CHECKPOINT):
        assert expected in summary
    assert str(tmp_path / RUN_NAME) in summary


def test_hardware_panel_on_cuda_shows_gpu_utilisation_memory_temperature_and_power() -> None:
    from hellogpt.dashboard.live import hardware_readings

    reading = {
        **fixed_reading("cuda"),
        "gpu_util_percent": 97.0,
        "gpu_memory_used_bytes": 30 * 2**30,
        "gpu_memory_total_bytes": 80 * 2**30,
        "gpu_temperature_c": 64.0,
        "gpu_power_w": 412.0,
    }
    assert dict(hardware_readings(reading)) == {
        "CPU": "37%",
        "RSS": "512.0 MiB",
        "RAM": "6.0 GiB/16.0 GiB",
        "GPU": "97%",
        "GPU mem": "30.0 GiB/80.0 GiB",
        "temp": "64°C",
        "power": "412 W",
    }


def test_the_whole_dashboard_fits_an_80_column_terminal(tmp_path: Path) -> None:
    console = recording_console(width=80, height=30)
    view = view_after(list(run_events(tmp_path, finish_reason=None)), console)
    text = rendered_text(view, console)
    view.sampler.stop()
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "train loss      2.0000" in text and "102,400" in text and "100/100" in text


def wait_for_first_reading(view: LiveView) -> None:
    """Until the sensor sampler has its first reading (polled: the sampler has no event to wait on)."""
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while view.sampler.latest is None and time.monotonic() < deadline:
        time.sleep(0.01)
