"""`hellogpt train`: train a GPT from scratch (or continue one with --resume), shown live or as plain lines."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Iterator, Optional

import typer

from hellogpt.cli.options import ConfigOption, ProfileOption, SetOption, resolve_cli_config
from hellogpt.errors import INTERRUPTED_EXIT_CODE, USER_ERROR_EXIT_CODE, UserError, print_user_error

if TYPE_CHECKING:
    from hellogpt.config.layers import ResolvedConfig
    from hellogpt.train.events import RunFinished, TrainingEvent

DataOption = Annotated[
    Optional[Path],
    typer.Option("--data", "-d", help="Dataset folder from `hellogpt prepare`; default: data.dataset, else data/<dataset>."),
]
NameOption = Annotated[
    Optional[str],
    typer.Option(
        "--name",
        "-n",
        help="Run name: its records go to train.runs_dir/NAME and, without --checkpoint, its checkpoint to NAME.pt; "
        "default: checkpoint name and time.",
    ),
]
MaxTimeOption = Annotated[
    Optional[str],
    typer.Option("--max-time", help="Stop after this long (90s, 10m, 2h, 1h30m), evaluating and saving first."),
]
CheckpointOption = Annotated[
    Optional[str],
    typer.Option("--checkpoint", help="Checkpoint file: a bare NAME.pt lands in train.out_dir; default: train.checkpoint_name."),
]
PlainOption = Annotated[
    bool, typer.Option("--plain", help="One plain line per event instead of the live dashboard (also when piped or NO_COLOR).")
]
TensorBoardOption = Annotated[
    bool, typer.Option("--tensorboard", help="Also log to TensorBoard under the run folder (needs `pip install tensorboard`).")
]

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_SECONDS_PER_UNIT = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)


def train_command(
    profile: ProfileOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    data: DataOption = None,
    name: NameOption = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the checkpoint exactly where it stopped.")] = False,
    max_time: MaxTimeOption = None,
    checkpoint: CheckpointOption = None,
    plain: PlainOption = False,
    tensorboard: TensorBoardOption = False,
) -> None:
    """Train a GPT on a prepared dataset; Ctrl-C saves and stops (exit 130), --resume continues.

    [dim]Examples: hellogpt train --profile quickstart | hellogpt train --profile edgar_poe --max-time 2h |
    torchrun --nproc_per_node=4 -m hellogpt train --profile edgar_poe[/]
    """
    from hellogpt.train.dataset import resolve_data_dir

    resolved = resolve_cli_config(profile, config, set_)
    max_seconds = parse_duration(max_time) if max_time else None
    data_dir = resolve_data_dir(resolved.config.data, data)
    checkpoint_path = checkpoint_path_for(resolved, checkpoint or checked_run_name(name))
    run_training(
        resolved,
        data_dir,
        checkpoint_path,
        resume=resume,
        max_seconds=max_seconds,
        run_name=name,
        plain=plain,
        tensorboard=tensorboard,
    )


def checked_run_name(name: Optional[str]) -> Optional[str]:
    """`--name` becomes a folder under train.runs_dir and, without --checkpoint, the checkpoint's name."""
    from hellogpt.train.checkpoint import is_valid_run_name

    if name is not None and not is_valid_run_name(name):
        raise UserError(
            f"--name {name!r} is not a plain name: use letters, digits and _ . - (no '/', no '..', no leading dot)"
        )
    return name


def checkpoint_path_for(resolved: "ResolvedConfig", checkpoint: Optional[str]) -> Path:
    """`--checkpoint` (a bare name lands in train.out_dir), else train.out_dir / train.checkpoint_name."""
    from hellogpt.train.checkpoint import resolve_checkpoint_path

    train_config = resolved.config.train
    return resolve_checkpoint_path(checkpoint or train_config.checkpoint_name, Path(train_config.out_dir))


def run_training(
    resolved: "ResolvedConfig",
    data_dir: Path,
    checkpoint_path: Path,
    *,
    resume: bool = False,
    max_seconds: Optional[float] = None,
    run_name: Optional[str] = None,
    plain: bool = False,
    tensorboard: bool = False,
    init: Optional[dict[str, Any]] = None,
) -> None:
    """Prepare the data when the config says how, run the loop under the dashboard, exit as it ended."""
    from hellogpt.train.distributed import launched_by_torchrun

    if tensorboard:
        from hellogpt.dashboard.tensorboard import require_tensorboard

        require_tensorboard()

    is_main = not launched_by_torchrun() or _rank() == 0
    if is_main:
        _prepare_dataset_if_configured(resolved, data_dir)
    from hellogpt.train.loop import train

    events = train(
        resolved,
        data_dir=data_dir,
        checkpoint_path=checkpoint_path,
        init=init,
        resume=resume,
        max_seconds=max_seconds,
        run_name=run_name or _default_run_name(checkpoint_path, resume),
    )
    if not is_main:
        _exit_as(_drain(events), checkpoint_path, show=False)
        return
    from hellogpt.dashboard import display_training

    kept = _SampleKeeper(events)
    finished = display_training(kept, plain=True if plain else None, tensorboard=tensorboard)
    _drain(kept)  # past RunFinished the loop only leaves the process group (with the other ranks)
    if finished.reason in ("completed", "time_budget") and kept.last_sample:
        _show_sample_and_chat_command(kept.last_sample, checkpoint_path, finished)
    _exit_as(finished, checkpoint_path, show=True)


def parse_duration(text: str) -> float:
    """Seconds in `90s`, `10m`, `2h`, `1h30m` or a bare number of seconds."""
    compact = text.strip().lower().replace(" ", "")
    parts = _DURATION_PART.findall(compact)
    if not compact or "".join(number + unit for number, unit in parts) != compact:
        raise UserError(f"--max-time '{text}' is not a duration: use for example 90s, 10m, 2h or 1h30m")
    seconds = sum(float(number) * _SECONDS_PER_UNIT[unit] for number, unit in parts)
    if seconds <= 0:
        raise UserError(f"--max-time '{text}' must be longer than zero")
    return seconds


class _SampleKeeper:
    """Passes the loop's events through and remembers the last sample; `throw` reaches the loop itself."""

    def __init__(self, events: Iterator["TrainingEvent"]) -> None:
        self._events = events
        self.last_sample: Optional[str] = None

    def __iter__(self) -> "_SampleKeeper":
        return self

    def __next__(self) -> "TrainingEvent":
        return self._remember(next(self._events))

    def throw(self, error: BaseException) -> "TrainingEvent":
        return self._remember(self._events.throw(error))  # type: ignore[attr-defined]

    def _remember(self, event: "TrainingEvent") -> "TrainingEvent":
        sample = getattr(event, "sample", None)
        if sample:
            self.last_sample = sample
        return event


def _prepare_dataset_if_configured(resolved: "ResolvedConfig", data_dir: Path) -> None:
    from rich.console import Console

    from hellogpt.train.dataset import dataset_exists, prepare_missing_dataset

    data_config = resolved.config.data
    if dataset_exists(data_dir) or not data_config.source:
        return
    console = Console(stderr=True, highlight=False)
    with console.status(f"preparing {data_config.source} into {data_dir} ({data_config.tokenizer} tokenizer)"):
        prepare_missing_dataset(data_config, data_dir)
    console.print(f"prepared {data_config.source} into {data_dir}")


def _show_sample_and_chat_command(sample: str, checkpoint_path: Path, finished: "RunFinished") -> None:
    from rich.console import Console
    from rich.panel import Panel
    from rich.text import Text

    console = Console(highlight=False)
    from hellogpt.train.checkpoint import latest_checkpoint_path

    console.print(Panel(Text(sample.strip("\n")), title=f"sample at step {finished.step}", title_align="left"))
    best, latest = checkpoint_path, latest_checkpoint_path(checkpoint_path)
    if best.exists():
        console.print(f"chat with it: hellogpt chat --checkpoint {shlex.quote(str(best))}")
        if latest.exists():
            console.print(f"(that is the best model; the latest state, to --resume from, is {latest})")
    elif latest.exists():
        console.print(f"chat with it: hellogpt chat --checkpoint {shlex.quote(str(latest))}")


def _exit_as(finished: Optional["RunFinished"], checkpoint_path: Path, show: bool) -> None:
    """Exit code by how the run ended: 130 interrupted, 2 diverged, 0 otherwise."""
    if finished is None:
        return
    if finished.reason == "interrupted":
        if show:
            saved = finished.checkpoint_paths[-1] if finished.checkpoint_paths else None
            what = f"saved {saved}" if saved else f"nothing new to save ({checkpoint_path} is as it was)"
            if saved or checkpoint_path.exists():
                what += f"; continue with: {_resume_command()}"
            sys.stderr.write(f"interrupted: {what}\n")
        raise typer.Exit(INTERRUPTED_EXIT_CODE)
    if finished.reason == "diverged":
        if show:
            print_user_error(UserError(finished.message or "training diverged (NaN/inf loss)"))
        raise typer.Exit(USER_ERROR_EXIT_CODE)


def _drain(events: Iterator["TrainingEvent"]) -> Optional["RunFinished"]:
    """Run the loop on a rank that shows nothing; its last event says how it ended."""
    from hellogpt.train.events import RunFinished

    finished = None
    for event in events:
        if isinstance(event, RunFinished):
            finished = event
    return finished


def _resume_command() -> str:
    arguments = [argument for argument in sys.argv[1:] if argument != "--resume"]
    return "hellogpt " + shlex.join([*arguments, "--resume"])


def _default_run_name(checkpoint_path: Path, resume: bool) -> Optional[str]:
    """A resumed run keeps its name (from the checkpoint); a new one gets the checkpoint name and the time."""
    if resume:
        return None
    from datetime import datetime

    return f"{checkpoint_path.stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _rank() -> int:
    import os

    return int(os.environ.get("RANK", "0"))
