"""Run records: config.yaml, metrics.jsonl written as the run goes, the loss images, `hellogpt info RUN_DIR`."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Iterator

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from hellogpt.cli import app
from hellogpt.dashboard import display_training
from hellogpt.dashboard.records import describe_run, loss_curves, read_metrics
from hellogpt.errors import UserError
from hellogpt.train.events import TrainingEvent

from tests.dashboard.synthetic import CHECKPOINT, RUN_NAME, run_events

SVG_NAMESPACE = {"svg": "http://www.w3.org/2000/svg"}


def quiet_run(events) -> None:
    display_training(events, plain=True, console=Console(file=io.StringIO()))


def svg_points(svg_path: Path, series: str) -> list[tuple[float, float]]:
    root = ElementTree.parse(svg_path).getroot()
    polyline = root.find(f".//svg:polyline[@id='{series}']", SVG_NAMESPACE)
    assert polyline is not None
    return [tuple(map(float, pair.split(","))) for pair in polyline.get("points", "").split()]


def test_metrics_jsonl_has_one_record_per_step_and_per_eval(tmp_path: Path) -> None:
    quiet_run(run_events(tmp_path))
    records = read_metrics(tmp_path / RUN_NAME)
    steps = [record for record in records if record["kind"] == "step"]
    evals = [record for record in records if record["kind"] == "eval"]
    assert [record["step"] for record in steps] == list(range(10, 101, 10))
    assert steps[1]["loss"] == 3.6 and steps[1]["tokens_per_second"] == 102_400.0 and steps[1]["mfu"] == 0.0123
    assert [(record["step"], record["val_loss"]) for record in evals] == [(50, 3.1), (100, 2.1)]
    assert [record["kind"] for record in records][0] == "run_started" and records[-1]["kind"] == "run_finished"


def test_config_yaml_is_the_resolved_config(tmp_path: Path) -> None:
    quiet_run(run_events(tmp_path))
    config = yaml.safe_load((tmp_path / RUN_NAME / "config.yaml").read_text(encoding="utf-8"))
    assert config == {"model": {"n_layer": 4}, "train": {"runs_dir": str(tmp_path), "max_iters": 100}}


def test_metrics_are_on_disk_while_the_run_goes_on(tmp_path: Path) -> None:
    lines_seen_mid_run: list[int] = []

    def run_that_looks_at_its_records() -> Iterator[TrainingEvent]:
        for index, event in enumerate(run_events(tmp_path)):
            yield event
            if index == 3:  # RunStarted and three steps (the eval comes at step 50)
                lines_seen_mid_run.append(len((tmp_path / RUN_NAME / "metrics.jsonl").read_text().splitlines()))

    quiet_run(run_that_looks_at_its_records())
    assert lines_seen_mid_run == [4]


def test_svg_is_valid_with_one_point_per_logged_step_and_eval(tmp_path: Path) -> None:
    quiet_run(run_events(tmp_path))
    svg = tmp_path / RUN_NAME / "loss.svg"
    assert len(svg_points(svg, "train")) == 10
    assert len(svg_points(svg, "val")) == 2
    train_x = [x for x, _ in svg_points(svg, "train")]
    assert train_x == sorted(train_x)


def test_svg_has_labelled_axes_and_both_curves_where_their_values_are(tmp_path: Path) -> None:
    quiet_run(run_events(tmp_path))
    root = ElementTree.parse(tmp_path / RUN_NAME / "loss.svg").getroot()
    texts = [element.text for element in root.iter(f"{{{SVG_NAMESPACE['svg']}}}text")]
    assert "step" in texts and f"{RUN_NAME}: loss" in texts
    assert "train (10 points)" in texts and "val (2 points)" in texts
    train, val = loss_curves(read_metrics(tmp_path / RUN_NAME))
    for series, points in (("train", train), ("val", val)):
        pixels = svg_points(tmp_path / RUN_NAME / "loss.svg", series)
        # Later steps lie further right; a lower loss lies lower on the page (larger y).
        assert [x for x, _ in pixels] == sorted(x for x, _ in pixels)
        by_loss = [y for _, (y, _) in sorted(zip([loss for _, loss in points], pixels), key=lambda pair: pair[0])]
        assert by_loss == sorted(by_loss, reverse=True)
    val_dots = root.findall(".//svg:circle", SVG_NAMESPACE)
    assert len(val_dots) == 2


def test_png_is_drawn_by_matplotlib_with_both_curves(tmp_path: Path) -> None:
    image_module = pytest.importorskip("matplotlib.image", reason="matplotlib draws loss.png (pip install 'hellogpt[plots]')")
    from PIL import Image

    from hellogpt.dashboard.plots import TRAIN_COLOR, VAL_COLOR

    quiet_run(run_events(tmp_path))
    path = tmp_path / RUN_NAME / "loss.png"
    with Image.open(path) as image:
        assert image.size == (720, 400)
        assert image.info["Description"] == "train_points=10 val_points=2"
    pixels = (image_module.imread(path)[..., :3] * 255).round().astype(int)
    for color in (TRAIN_COLOR, VAL_COLOR):
        rgb = [int(color[index : index + 2], 16) for index in (1, 3, 5)]
        assert (abs(pixels - rgb).sum(axis=-1) <= 30).sum() > 100, color


def test_without_matplotlib_only_the_svg_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)  # import fails as if not installed
    quiet_run(run_events(tmp_path))
    assert sorted(path.name for path in (tmp_path / RUN_NAME).iterdir()) == ["config.yaml", "loss.svg", "metrics.jsonl"]


def test_a_resumed_run_appends_and_replaces_the_steps_after_its_start(tmp_path: Path) -> None:
    quiet_run(run_events(tmp_path, max_iters=100))
    quiet_run(run_events(tmp_path, start_step=50, max_iters=150))
    train, val = loss_curves(read_metrics(tmp_path / RUN_NAME))
    assert [step for step, _ in train] == list(range(10, 151, 10))
    assert [step for step, _ in val] == [50, 100, 150]
    assert len(svg_points(tmp_path / RUN_NAME / "loss.svg", "train")) == 15


def test_a_fresh_run_with_the_same_name_starts_new_metrics(tmp_path: Path) -> None:
    quiet_run(run_events(tmp_path, max_iters=100))
    quiet_run(run_events(tmp_path, max_iters=30))
    train, _ = loss_curves(read_metrics(tmp_path / RUN_NAME))
    assert [step for step, _ in train] == [10, 20, 30]


def test_describe_run_summarises_the_folder(tmp_path: Path) -> None:
    quiet_run(run_events(tmp_path))
    summary = describe_run(tmp_path / RUN_NAME)
    assert summary["run_name"] == RUN_NAME and summary["steps"] == 100 and summary["status"] == "completed"
    assert summary["best_val_loss"] == 2.1 and summary["last_train_loss"] == 2.0
    assert summary["tokens_per_second_median"] == 102_400.0 and summary["wall_seconds"] == 75.0
    assert summary["checkpoints"] == [CHECKPOINT]
    assert summary["files"] == ["config.yaml", "loss.png", "loss.svg", "metrics.jsonl"]


def test_info_on_a_run_folder_prints_its_summary(tmp_path: Path) -> None:
    quiet_run(run_events(tmp_path))
    result = CliRunner().invoke(app, ["info", str(tmp_path / RUN_NAME), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["best_val_loss"] == 2.1


def test_describe_run_on_a_folder_without_metrics_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="metrics.jsonl"):
        describe_run(tmp_path)


def test_tensorboard_without_the_package_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(UserError, match="pip install tensorboard"):
        display_training(run_events(tmp_path), plain=True, console=Console(file=io.StringIO()), tensorboard=True)
    assert not (tmp_path / RUN_NAME).exists()


@pytest.mark.slow
def test_a_real_short_run_records_every_logged_step(tmp_path: Path) -> None:
    from hellogpt.train.loop import train
    from tests.train.conftest import shakespeare_text, tiny_config, write_char_dataset

    data_dir = write_char_dataset(tmp_path / "data", shakespeare_text(20_000))
    resolved = tiny_config(f"train.runs_dir={tmp_path / 'runs'}")
    events = train(resolved, data_dir=data_dir, checkpoint_path=tmp_path / "tiny.pt", run_name="tiny")
    finished = display_training(events, plain=True, console=Console(file=io.StringIO()))
    records = read_metrics(tmp_path / "runs" / "tiny")
    assert finished.reason == "completed"
    assert [record["step"] for record in records if record["kind"] == "step"] == list(range(1, 9))
    assert [record["step"] for record in records if record["kind"] == "eval"] == [4, 8]
    assert len(svg_points(tmp_path / "runs" / "tiny" / "loss.svg", "train")) == 8


def test_tensorboard_logs_every_step_and_eval_when_installed(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    display_training(run_events(tmp_path), plain=True, console=Console(file=io.StringIO()), tensorboard=True)
    events = EventAccumulator(str(tmp_path / RUN_NAME / "tensorboard"))
    events.Reload()
    assert len(events.Scalars("loss/train")) == 10
    assert [(event.step, round(event.value, 4)) for event in events.Scalars("loss/val")] == [(50, 3.1), (100, 2.1)]
