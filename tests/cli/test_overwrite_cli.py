"""A trained model and its records are never replaced by running the same command again: refused in one line,
continued with --resume, replaced with --overwrite; one writer per checkpoint at a time (two real processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hellogpt.checkpoints.format import load_checkpoint
from tests.cli.test_train import REPO_ROOT, assert_one_line_error, invoke, sets, workdir  # noqa: F401

TRAIN = ("train", "--data", "data/tiny", "--plain")


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden ones included) and its bytes."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def train_once(*arguments: str) -> None:
    result = invoke(*TRAIN, *arguments, *sets("train.max_iters=4"))
    assert result.exit_code == 0, result.output


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_second_run_into_a_trained_checkpoint_is_refused_and_changes_nothing(workdir: Path) -> None:
    train_once("--name", "tiny")
    before = snapshot(workdir)
    result = invoke(*TRAIN, "--name", "tiny", *sets("train.max_iters=2"))
    assert_one_line_error(
        result, "checkpoints/tiny.pt already exists (step 4, best val loss", "--resume", "--name NEW", "--overwrite"
    )
    assert snapshot(workdir) == before


def test_a_latest_state_alone_is_refused_too(workdir: Path) -> None:
    train_once("--checkpoint", "tiny.pt")
    (workdir / "checkpoints" / "tiny.pt").rename(workdir / "checkpoints" / "tiny.latest.pt")
    before = snapshot(workdir)
    result = invoke(*TRAIN, "--checkpoint", "tiny.pt", *sets())
    assert_one_line_error(result, "checkpoints/tiny.latest.pt already exists (step 4", "--resume")
    assert snapshot(workdir) == before


def test_a_new_run_never_truncates_the_records_of_a_run_of_the_same_name(workdir: Path) -> None:
    train_once("--name", "tiny")
    before = snapshot(workdir)
    result = invoke(*TRAIN, "--name", "tiny", "--checkpoint", "other.pt", *sets())
    assert_one_line_error(result, "runs/tiny/metrics.jsonl holds the records of an earlier run", "--overwrite")
    assert snapshot(workdir) == before


def test_overwrite_replaces_the_checkpoint_and_the_records(workdir: Path) -> None:
    train_once("--name", "tiny")
    result = invoke(*TRAIN, "--name", "tiny", "--overwrite", *sets("train.max_iters=2", "train.eval_interval=2"))
    assert result.exit_code == 0, result.output
    assert load_checkpoint(workdir / "checkpoints" / "tiny.pt").step == 2
    records = [json.loads(line) for line in (workdir / "runs" / "tiny" / "metrics.jsonl").read_text().splitlines()]
    assert [record["kind"] for record in records].count("run_started") == 1 and records[-1]["step"] == 2


def test_resume_appends_to_the_records(workdir: Path) -> None:
    train_once("--name", "tiny")
    metrics = workdir / "runs" / "tiny" / "metrics.jsonl"
    first_run = metrics.read_bytes()
    result = invoke(*TRAIN, "--name", "tiny", "--resume", *sets("train.max_iters=6"))
    assert result.exit_code == 0, result.output
    assert metrics.read_bytes().startswith(first_run)
    starts = [json.loads(line)["start_step"] for line in metrics.read_text().splitlines() if '"run_started"' in line]
    assert starts == [0, 4]


def test_resume_and_overwrite_together_are_refused(workdir: Path) -> None:
    assert_one_line_error(invoke(*TRAIN, "--resume", "--overwrite", *sets()), "give one of them")


def test_an_unreadable_latest_state_is_named_instead_of_resuming_the_older_best(workdir: Path) -> None:
    train_once("--checkpoint", "tiny.pt")
    (workdir / "checkpoints" / "tiny.latest.pt").write_bytes(b"PK\x03\x04 torn by a crash")
    before = snapshot(workdir)
    result = invoke(*TRAIN, "--checkpoint", "tiny.pt", "--resume", *sets("train.max_iters=6"))
    assert_one_line_error(result, "checkpoints/tiny.latest.pt", "cannot be read", "move it aside", "the older checkpoints/tiny.pt")
    assert snapshot(workdir) == before


def test_a_killed_saves_temporary_files_are_removed_and_a_live_ones_kept(workdir: Path) -> None:
    folder = workdir / "checkpoints"
    folder.mkdir()
    dead = folder / f".tiny.pt.{dead_pid()}.0123abcd.tmp"
    dead_latest = folder / f".tiny.latest.pt.{dead_pid()}.0123abcd.tmp"
    live = folder / f".tiny.pt.{os.getpid()}.0123abcd.tmp"
    for path in (dead, dead_latest, live):
        path.write_bytes(b"\0" * 1000)
    train_once("--checkpoint", "tiny.pt")
    assert not dead.exists() and not dead_latest.exists() and live.exists()


def test_tune_into_an_existing_tuned_checkpoint_is_refused_and_overwrite_replaces_it(workdir: Path) -> None:
    train_once("--checkpoint", "base.pt")
    tune = ("tune", "--from", "base.pt", "--data", "data/tiny", "--plain")
    assert invoke(*tune, *sets("train.max_iters=2")).exit_code == 0
    before = snapshot(workdir)
    assert_one_line_error(invoke(*tune, *sets("train.max_iters=1")), "checkpoints/base_tuned.pt already exists (step 2")
    assert snapshot(workdir) == before
    result = invoke(*tune, "--overwrite", *sets("train.max_iters=1", "train.eval_interval=1"))
    assert result.exit_code == 0, result.output
    assert load_checkpoint(workdir / "checkpoints" / "base_tuned.pt").step == 1


HOLD_THE_CHECKPOINT = """
import sys
from pathlib import Path
from hellogpt.train.claim import claimed_checkpoint
with claimed_checkpoint(Path(sys.argv[1]), resume=False, overwrite=False):
    print("holding", flush=True)
    sys.stdin.read()
"""


def test_a_second_process_on_the_same_checkpoint_is_refused_until_the_first_ends(workdir: Path) -> None:
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_CHECKPOINT, "checkpoints/tiny.pt"],
        cwd=workdir, env=environment, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdin is not None
    try:
        assert holder.stdout.readline() == "holding\n"
        result = invoke(*TRAIN, "--checkpoint", "tiny.pt", *sets())
        assert_one_line_error(result, "checkpoints/tiny.pt is being written by another run", f"process {holder.pid}")
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert holder.returncode == 0
    assert not (workdir / "checkpoints" / ".tiny.pt.lock").exists()
    train_once("--checkpoint", "tiny.pt")


def test_a_lock_left_by_a_dead_process_is_taken_over(workdir: Path) -> None:
    lock = workdir / "checkpoints" / ".tiny.pt.lock"
    lock.parent.mkdir()
    lock.write_text(json.dumps({"pid": dead_pid(), "host": os.uname().nodename}))
    train_once("--checkpoint", "tiny.pt")
    assert not lock.exists() and load_checkpoint(workdir / "checkpoints" / "tiny.pt").step == 4


@pytest.mark.parametrize("failure", ["user error", "exception", "ctrl-c"])
def test_the_lock_is_released_however_the_run_ends(workdir: Path, failure: str) -> None:
    from hellogpt.errors import UserError
    from hellogpt.train.claim import claimed_checkpoint

    raised = {"user error": UserError("no"), "exception": RuntimeError("bug"), "ctrl-c": KeyboardInterrupt()}[failure]
    checkpoint = workdir / "checkpoints" / "tiny.pt"
    with pytest.raises(type(raised)):
        with claimed_checkpoint(checkpoint, resume=False, overwrite=False):
            raise raised
    assert not (checkpoint.parent / ".tiny.pt.lock").exists()
    with claimed_checkpoint(checkpoint, resume=False, overwrite=False):
        pass


def test_an_automatic_run_name_that_is_taken_gets_a_suffix(tmp_path: Path) -> None:
    from hellogpt.dashboard.records import run_name_for_records

    for taken in ("tiny-20250101-120000", "tiny-20250101-120000-2"):
        (tmp_path / taken).mkdir()
        (tmp_path / taken / "metrics.jsonl").write_text("{}\n")
    name = run_name_for_records(tmp_path, None, "tiny-20250101-120000", resume=False, overwrite=False)
    assert name == "tiny-20250101-120000-3"
