"""Run records: `<train.runs_dir>/<run_name>/` with config.yaml, metrics.jsonl and the loss plot.

metrics.jsonl is written line by line and flushed, so a crash keeps every metric
so far. A fresh run (start_step 0) starts the file anew (its name was chosen by
`run_name_for_records`, which never gives it another run's records unless --overwrite
said so); a resumed run appends to it, so the loss images, drawn at the end from the
file, show the whole curve.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path
from typing import IO, Any, Optional

import yaml

from hellogpt import files
from hellogpt.errors import UserError
from hellogpt.train.events import CheckpointEvent, EvalEvent, RunFinished, RunStarted, StepEvent, TrainingEvent

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"
SVG_FILE = "loss.svg"
PNG_FILE = "loss.png"
DEFAULT_RUNS_DIR = "runs"
# What a failed write of a run record suggests besides freeing space.
RECORDS_ELSEWHERE = "set train.runs_dir to another folder"
# An automatic run name that is taken gets -2, -3, ... up to this many tries.
MAX_RUN_NAME_SUFFIX = 1000

EVENT_KINDS: dict[type, str] = {
    RunStarted: "run_started",
    StepEvent: "step",
    EvalEvent: "eval",
    CheckpointEvent: "checkpoint",
    RunFinished: "run_finished",
}


def run_directory(event: RunStarted) -> Path:
    """Where a run's records go: train.runs_dir from its config (default `runs`) / run name."""
    runs_dir = (event.config.get("train") or {}).get("runs_dir") or DEFAULT_RUNS_DIR
    return Path(runs_dir) / event.run_name


def event_record(event: TrainingEvent) -> dict[str, Any]:
    """One metrics.jsonl object: the event's fields and a `kind`."""
    record: dict[str, Any] = {"kind": EVENT_KINDS[type(event)]}
    record.update(dataclasses.asdict(event))
    if isinstance(event, RunStarted):
        record.pop("config", None)  # it has its own file
    return record


class RunRecorder:
    """Writes the run folder as events arrive; `close` draws the loss images."""

    def __init__(self) -> None:
        self.run_dir: Optional[Path] = None
        self._metrics: Optional[IO[str]] = None

    def handle(self, event: TrainingEvent) -> None:
        if isinstance(event, RunStarted):
            self._open(event)
        if self._metrics is None or type(event) not in EVENT_KINDS:
            return  # progress within a step is shown, not recorded
        try:
            self._metrics.write(json.dumps(event_record(event), default=str, allow_nan=True) + "\n")
            self._metrics.flush()
        except OSError as error:
            self._abandon_metrics()
            raise files.write_error(error, self._metrics_path(), RECORDS_ELSEWHERE) from None

    def close(self) -> None:
        if self._metrics is None or self.run_dir is None:
            return
        try:
            self._metrics.close()
        except OSError as error:
            raise files.write_error(error, self._metrics_path(), RECORDS_ELSEWHERE) from None
        finally:
            self._metrics = None
        write_loss_images(self.run_dir)

    def _metrics_path(self) -> Path:
        return (self.run_dir or Path(".")) / METRICS_FILE

    def _abandon_metrics(self) -> None:
        """Close metrics.jsonl after a failed write; closing flushes, which would fail the same way."""
        if self._metrics is not None:
            try:
                self._metrics.close()
            except OSError:
                pass
            self._metrics = None

    def _open(self, event: RunStarted) -> None:
        if self._metrics is not None:
            self._metrics.close()
        self.run_dir = run_directory(event)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"cannot create the run folder {self.run_dir}: {error.strerror}; set train.runs_dir") from error
        _write_atomically(self.run_dir / CONFIG_FILE, yaml.safe_dump(event.config, sort_keys=False))
        mode = "a" if event.start_step > 0 else "w"
        try:
            self._metrics = files.open_for_writing(self.run_dir / METRICS_FILE, mode, encoding="utf-8")
        except OSError as error:
            raise files.write_error(error, self.run_dir / METRICS_FILE, RECORDS_ELSEWHERE) from None


def run_name_for_records(
    runs_dir: Path, name: Optional[str], automatic_name: str, *, resume: bool, overwrite: bool
) -> Optional[str]:
    """The run's name, whose folder under `runs_dir` gets its records; None lets a resumed run keep its own.

    A resumed run appends to its records and --overwrite replaces them; a new run never truncates another's: a
    name given with --name whose folder has records is refused, an automatic one that is taken gets a suffix."""
    if resume:
        return name
    if name is None:
        return _unused_run_name(Path(runs_dir), automatic_name)
    records = Path(runs_dir) / name / METRICS_FILE
    if records.exists() and not overwrite:
        raise UserError(
            f"{records} holds the records of an earlier run named {name!r}: give this run another --name, "
            "or replace them with --overwrite"
        )
    return name


def _unused_run_name(runs_dir: Path, name: str) -> str:
    """`name`, or `name-2`, `name-3`, ... : the first whose folder holds no records."""
    candidate = name
    for suffix in range(2, MAX_RUN_NAME_SUFFIX):
        if not (runs_dir / candidate / METRICS_FILE).exists():
            return candidate
        candidate = f"{name}-{suffix}"
    raise UserError(f"{runs_dir} holds runs {name} to {candidate}: give this run a --name")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Every record of metrics.jsonl; a torn last line (crash mid-write) is skipped."""
    records = []
    with open(run_dir / METRICS_FILE, encoding="utf-8") as lines:
        for line in lines:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def loss_curves(records: list[dict[str, Any]]) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(train, val) points by step; steps past a resume point are replaced by the resumed run's."""
    train: dict[int, float] = {}
    val: dict[int, float] = {}
    for record in records:
        if record.get("kind") == "run_started":
            resumed_from = int(record.get("start_step", 0))
            train = {step: loss for step, loss in train.items() if step <= resumed_from}
            val = {step: loss for step, loss in val.items() if step <= resumed_from}
        elif record.get("kind") == "step":
            train[int(record["step"])] = float(record["loss"])
        elif record.get("kind") == "eval":
            val[int(record["step"])] = float(record["val_loss"])
    return sorted(train.items()), sorted(val.items())


def write_loss_images(run_dir: Path) -> list[Path]:
    """loss.svg from metrics.jsonl, and loss.png when matplotlib is installed; nothing when no step was logged."""
    from hellogpt.dashboard.plots import loss_curve_png, loss_curve_svg

    train, val = loss_curves(read_metrics(run_dir))
    if not train and not val:
        return []
    title = f"{run_dir.name}: loss"
    svg_path, png_path = run_dir / SVG_FILE, run_dir / PNG_FILE
    _write_atomically(svg_path, loss_curve_svg(train, val, title=title))
    png = loss_curve_png(train, val, title=title)
    if png is None:
        return [svg_path]
    _write_atomically(png_path, png)
    return [svg_path, png_path]


def describe_run(path: Path) -> dict[str, Any]:
    """A run folder summarised for `hellogpt info RUN_DIR`."""
    path = Path(path)
    if not (path / METRICS_FILE).exists():
        raise UserError(f"{path} is not a run folder (no {METRICS_FILE}); run folders are under train.runs_dir")
    records = read_metrics(path)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_kind.setdefault(record.get("kind", ""), []).append(record)
    steps, evals = by_kind.get("step", []), by_kind.get("eval", [])
    started = by_kind.get("run_started", [{}])[-1]
    finished = (by_kind.get("run_finished") or [None])[-1]
    val_losses = [record["val_loss"] for record in evals] + [record["best_val_loss"] for record in evals]
    if finished and finished.get("best_val_loss") is not None:
        val_losses.append(finished["best_val_loss"])
    checkpoints = list(dict.fromkeys(record["path"] for record in by_kind.get("checkpoint", [])))
    return {
        "run_name": started.get("run_name", path.name),
        "profile": started.get("profile"),
        "device": started.get("device"),
        "parameters": started.get("n_params"),
        "steps": steps[-1]["step"] if steps else 0,
        "max_iters": started.get("max_iters"),
        "status": finished["reason"] if finished else "unfinished (no run_finished record)",
        "best_val_loss": min(val_losses) if val_losses else None,
        "last_train_loss": steps[-1]["loss"] if steps else None,
        "last_val_loss": evals[-1]["val_loss"] if evals else None,
        "tokens_per_second_median": statistics.median(r["tokens_per_second"] for r in steps) if steps else None,
        "tokens_seen": finished["tokens_seen"] if finished else (steps[-1]["tokens_seen"] if steps else 0),
        "wall_seconds": finished["wall_seconds"] if finished else (steps[-1]["elapsed_seconds"] if steps else None),
        "checkpoints": checkpoints,
        "files": sorted(entry.name for entry in path.iterdir() if entry.is_file()),
    }


def _write_atomically(path: Path, content: str | bytes) -> None:
    if isinstance(content, bytes):
        files.write_bytes_atomically(path, content, elsewhere=RECORDS_ELSEWHERE)
    else:
        files.write_text_atomically(path, content, elsewhere=RECORDS_ELSEWHERE)
