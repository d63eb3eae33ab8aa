"""A dropped ssh session (SIGHUP, and a terminal that fails every write) saves the run like Ctrl-C."""

from __future__ import annotations

import errno
import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hellogpt.checkpoints.format import load_checkpoint
from hellogpt.cli import app
from hellogpt.cli.lost_output import SurvivingStream
from hellogpt.cli.signals import STOP_SIGNALS, StopOnSignals
from hellogpt.errors import INTERRUPTED_EXIT_CODE
from hellogpt.train.resume import resume_source
from tests.train.conftest import TINY_SETTINGS, shakespeare_text, write_char_dataset

REPO_ROOT = Path(__file__).resolve().parents[2]
needs_sighup = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")


def sets(*overrides: str) -> list[str]:
    assignments = [*TINY_SETTINGS, "train.gradient_accumulation_steps=1", *overrides]
    return [argument for assignment in assignments for argument in ("--set", assignment)]


class DeadTerminal(io.StringIO):
    """A stream whose writes fail as a hung-up terminal's do."""

    def write(self, text: str) -> int:
        raise OSError(errno.EIO, "Input/output error")


@needs_sighup
def test_sighup_is_a_stop_signal_and_repeated_ones_only_ask_again() -> None:
    assert signal.SIGHUP in STOP_SIGNALS
    asked: list[str] = []
    with StopOnSignals(lambda: asked.append("stop")):
        signal.raise_signal(signal.SIGHUP)
        signal.raise_signal(signal.SIGHUP)
    assert asked == ["stop", "stop"]


def test_a_torchrun_rank_does_not_abort_on_a_second_ctrl_c() -> None:
    asked: list[str] = []
    with StopOnSignals(lambda: asked.append("stop"), second_ctrl_c_aborts=False):
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)  # torchrun may forward one more; leaving alone would hang the others
    assert asked == ["stop", "stop"]


def test_writes_to_a_hung_up_terminal_are_dropped_not_raised() -> None:
    stream = SurvivingStream(DeadTerminal())  # type: ignore[arg-type]
    assert stream.write("step 4/8 | loss 3.1\n") == len("step 4/8 | loss 3.1\n")
    stream.flush()
    assert stream.lost


def test_other_write_errors_are_still_raised() -> None:
    class FullDisk(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        SurvivingStream(FullDisk()).write("x")  # type: ignore[arg-type]


@pytest.mark.slow
@needs_sighup
def test_a_dropped_terminal_saves_exits_130_and_the_run_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's stdout and stderr are a terminal that hangs up mid-run (as when ssh drops): SIGHUP arrives, every
    later write (the last step, the checkpoint line, the summary) fails with EIO, and the run still saves and exits
    as interrupted."""
    import fcntl
    import pty
    import termios

    monkeypatch.chdir(tmp_path)
    write_char_dataset(tmp_path / "data" / "tiny", shakespeare_text())
    command = [sys.executable, "-m", "hellogpt", "train", "--data", "data/tiny", "--checkpoint", "tiny.pt", "--plain"]
    command += sets("train.max_iters=100000", "train.eval_interval=100000")
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "NO_COLOR": "1"}
    terminal, its_other_end = pty.openpty()

    def make_it_the_controlling_terminal() -> None:  # in the child, after setsid (start_new_session)
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=environment,
        stdin=its_other_end,
        stdout=its_other_end,
        stderr=its_other_end,
        start_new_session=True,
        preexec_fn=make_it_the_controlling_terminal,
    )
    os.close(its_other_end)
    shown = b""
    try:
        while b"\nstep 3/" not in shown:  # wait until it really trains
            shown += os.read(terminal, 4096)
    except OSError:  # EIO: the process ended before training
        pass
    finally:
        os.close(terminal)  # the terminal hangs up: the kernel sends SIGHUP and fails every later write
    process.send_signal(signal.SIGHUP)
    assert process.wait(timeout=120) == INTERRUPTED_EXIT_CODE, shown.decode(errors="replace")[-3000:]
    saved = load_checkpoint(resume_source(tmp_path / "checkpoints" / "tiny.pt"))
    assert saved.step >= 3
    resume = ["train", "--data", "data/tiny", "--checkpoint", "tiny.pt", "--resume", "--plain"]
    more_steps = sets(f"train.max_iters={saved.step + 2}", "train.eval_interval=100000")
    resumed = CliRunner().invoke(app, [*resume, *more_steps])
    assert resumed.exit_code == 0, resumed.output
    assert load_checkpoint(tmp_path / "checkpoints" / "tiny.pt").step == saved.step + 2
