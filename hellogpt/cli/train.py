"""`hellogpt train`: train a GPT from scratch (or continue one with --resume), shown live or as plain lines."""

from __future__ import annotations

import contextlib
import re
import shlex
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Iterator, Optional

import typer
from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from hellogpt.cli.options import ConfigOption, ProfileOption, SetOption, resolve_cli_config
from hellogpt.cli.lost_output import surviving_lost_output
from hellogpt.cli.signals import StopOnSignals
from hellogpt.errors import INTERRUPTED_EXIT_CODE, USER_ERROR_EXIT_CODE, UserError, print_user_error
from hellogpt.train.events import RunEnd, RunFinished, TrainingEvent

# The training core, the checkpoint module (torch) and the config schema (pydantic) are imported inside the
# commands, never here: this module loads for `hellogpt --help`, which must stay instant.
if TYPE_CHECKING:
    from hellogpt.config.layers import ResolvedConfig
    from hellogpt.config.schema import DataConfig

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
OverwriteOption = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Start a new run over an existing checkpoint (and --name's run records): the old files are replaced "
        "when the new run first saves. Without it, a new run refuses to touch them.",
    ),
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
    overwrite: OverwriteOption = False,
) -> None:
    """Train a GPT on a prepared dataset; Ctrl-C saves and stops (exit 130), --resume continues.

    [dim]Examples: hellogpt train --profile quickstart | hellogpt train --profile edgar_poe --max-time 2h |
    torchrun --nproc_per_node=4 -m hellogpt train --profile edgar_poe[/]
    """
    from hellogpt.train.claim import claimed_checkpoint
    from hellogpt.train.dataset import resolve_data_dir

    resolved = resolve_cli_config(profile, config, set_)
    max_seconds = parse_duration(max_time) if max_time else None
    data_dir = resolve_data_dir(resolved.config.data, data)
    checkpoint_path = checkpoint_path_for(resolved, checkpoint or checked_run_name(name))
    with claimed_checkpoint(checkpoint_path, resume=resume, overwrite=overwrite):
        run_training(
            resolved,
            data_dir,
            checkpoint_path,
            resume=resume,
            overwrite=overwrite,
            max_seconds=max_seconds,
            run_name=name,
            plain=plain,
            tensorboard=tensorboard,
        )


def checked_run_name(name: Optional[str]) -> Optional[str]:
    """`--name` becomes a folder under train.runs_dir and, without --checkpoint, the checkpoint's name."""
    from hellogpt.checkpoints.paths import is_valid_run_name

    if name is not None and not is_valid_run_name(name):
        raise UserError(
            f"--name {name!r} is not a plain name: use letters, digits and _ . - (no '/', no '..', no leading dot)"
        )
    return name


def checkpoint_path_for(resolved: "ResolvedConfig", checkpoint: Optional[str]) -> Path:
    """`--checkpoint` (a bare name lands in train.out_dir), else train.out_dir / train.checkpoint_name."""
    from hellogpt.checkpoints.paths import resolve_checkpoint_path

    train_config = resolved.config.train
    return resolve_checkpoint_path(checkpoint or train_config.checkpoint_name, Path(train_config.out_dir))


def run_training(
    resolved: "ResolvedConfig",
    data_dir: Path,
    checkpoint_path: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    max_seconds: Optional[float] = None,
    run_name: Optional[str] = None,
    plain: bool = False,
    tensorboard: bool = False,
    init: Optional[dict[str, Any]] = None,
) -> None:
    """Run the training under the dashboard (rank 0) with Ctrl-C as its stop button; exit as it ended.

    The caller holds the checkpoint (`claimed_checkpoint`); the run records get a name that is this run's own."""
    from hellogpt.dashboard import display_training
    from hellogpt.dashboard.records import run_name_for_records
    from hellogpt.dashboard.tensorboard import require_tensorboard
    from hellogpt.train.loop import TrainingRun

    if tensorboard:
        require_tensorboard()
    runs_dir = Path(resolved.config.train.runs_dir)
    automatic_name = _automatic_run_name(checkpoint_path)
    records_name = run_name_for_records(runs_dir, run_name, automatic_name, resume=resume, overwrite=overwrite)
    run = TrainingRun(
        resolved,
        data_dir=data_dir,
        checkpoint_path=checkpoint_path,
        init=init,
        resume=resume,
        max_seconds=max_seconds,
        run_name=records_name,
        preparing=_show_preparation,
    )
    # Set up first (a Ctrl-C while the data is prepared ends at once), then Ctrl-C becomes the stop button; output
    # to a terminal that is gone (SIGHUP from a dropped ssh session) is dropped instead of failing the save.
    with surviving_lost_output():
        with run, StopOnSignals(run.request_stop, second_ctrl_c_aborts=not run.is_distributed):
            if not run.is_main:
                # Rank 0 alone exits as the run ended; a rank that exits non-zero first makes torchrun kill it
                # while it still shows how the run ended.
                _run_without_showing(run.events())
                return
            samples = _LastSample()
            plain_output = True if plain else None
            finished = display_training(samples.watch(run.events()), plain=plain_output, tensorboard=tensorboard)
        if finished.reason in (RunEnd.COMPLETED, RunEnd.TIME_BUDGET) and samples.text:
            _show_sample_and_chat_command(samples.text, checkpoint_path, finished)
        _exit_as(finished, checkpoint_path)


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


class _LastSample:
    """Remembers the last evaluation sample while the events pass by, to show it once the dashboard is gone."""

    def __init__(self) -> None:
        self.text: Optional[str] = None

    def watch(self, events: Iterator[TrainingEvent]) -> Iterator[TrainingEvent]:
        for event in events:
            sample = getattr(event, "sample", None)
            if sample:
                self.text = sample
            yield event


@contextlib.contextmanager
def _show_preparation(data: "DataConfig", data_dir: Path) -> Iterator[None]:
    """A status line on stderr while the run prepares its missing dataset from `data.source`."""
    console = Console(stderr=True, highlight=False)
    with console.status(f"preparing {data.source} into {data_dir} ({data.tokenizer} tokenizer)"):
        yield
    console.print(f"prepared {data.source} into {data_dir}")


def _show_sample_and_chat_command(sample: str, checkpoint_path: Path, finished: RunFinished) -> None:
    from hellogpt.checkpoints.paths import latest_checkpoint_path

    console = Console(highlight=False)

    console.print(Panel(Text(sample.strip("\n")), title=f"sample at step {finished.step}", title_align="left"))
    best, latest = checkpoint_path, latest_checkpoint_path(checkpoint_path)
    if best.exists():
        console.print(f"chat with it: hellogpt chat --checkpoint {shlex.quote(str(best))}")
        if latest.exists():
            console.print(f"(that is the best model; the latest state, to --resume from, is {latest})")
    elif latest.exists():
        console.print(f"chat with it: hellogpt chat --checkpoint {shlex.quote(str(latest))}")


def _exit_as(finished: RunFinished, checkpoint_path: Path) -> None:
    """Exit code by how the run ended: 130 interrupted, 2 diverged, 0 otherwise."""
    if finished.reason == RunEnd.INTERRUPTED:
        saved = finished.checkpoint_paths[-1] if finished.checkpoint_paths else None
        what = f"saved {saved}" if saved else f"nothing new to save ({checkpoint_path} is as it was)"
        if saved or checkpoint_path.exists():
            what += f"; continue with: {_resume_command()}"
        sys.stderr.write(f"interrupted: {what}\n")
        raise typer.Exit(INTERRUPTED_EXIT_CODE)
    if finished.reason == RunEnd.DIVERGED:
        print_user_error(UserError(finished.message or "training diverged (NaN/inf loss)"))
        raise typer.Exit(USER_ERROR_EXIT_CODE)


def _run_without_showing(events: Iterator[TrainingEvent]) -> None:
    """Run the loop on a rank that shows nothing."""
    for _ in events:
        pass


def _resume_command() -> str:
    arguments = [argument for argument in sys.argv[1:] if argument != "--resume"]
    return "hellogpt " + shlex.join([*arguments, "--resume"])


def _automatic_run_name(checkpoint_path: Path) -> str:
    """A new run without --name gets the checkpoint name and the time (a resumed one keeps its checkpoint's)."""
    return f"{checkpoint_path.stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
