"""Claiming a checkpoint before a run does any work.

A new run never replaces another run's checkpoint (NAME.pt, NAME.latest.pt) without --overwrite (Hugging Face
Trainer's `overwrite_output_dir` rule; `dashboard.records.run_name_for_records` does the same for run records),
two processes never write the same checkpoint at once (a lock beside it), and what a killed save left behind (its
hidden temporary files) is cleared at the next start. All of it happens before the data is prepared or a model
built, so a refusal costs nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hellogpt.checkpoints.format import peek_progress
from hellogpt.checkpoints.paths import latest_checkpoint_path
from hellogpt.errors import UserError
from hellogpt.files import remove_stale_temporary_files
from hellogpt.locking import exclusive_lock
from hellogpt.train.distributed import launched_by_torchrun

WAYS_ON = (
    "continue it with --resume, start a new one with --name NEW (or --checkpoint NEW.pt), or replace it with --overwrite"
)


@contextmanager
def claimed_checkpoint(checkpoint_path: Path, *, resume: bool, overwrite: bool) -> Iterator[None]:
    """Hold `checkpoint_path` for this run (the main process only under torchrun): refuse a second writer, clear
    stale temporary files, and refuse a new run (neither --resume nor --overwrite) over an existing checkpoint."""
    if resume and overwrite:
        raise UserError("--resume continues the checkpoint and --overwrite replaces it with a new run: give one of them")
    if not _is_main_process():
        _refuse_replacing(checkpoint_path, resume, overwrite)
        yield
        return
    busy = f"{checkpoint_path} is being written by another run: wait for it to end, or give this one another --checkpoint"
    with exclusive_lock(checkpoint_path, busy):
        for path in (checkpoint_path, latest_checkpoint_path(checkpoint_path)):
            remove_stale_temporary_files(path)
        _refuse_replacing(checkpoint_path, resume, overwrite)
        yield


def _refuse_replacing(checkpoint_path: Path, resume: bool, overwrite: bool) -> None:
    if resume or overwrite:
        return
    for path in (checkpoint_path, latest_checkpoint_path(checkpoint_path)):
        if path.exists():
            raise UserError(f"{path} already exists ({_describe_saved(path)}): {WAYS_ON}")


def _describe_saved(path: Path) -> str:
    progress = peek_progress(path) if path.is_file() else None
    if progress is None:
        return "unreadable"
    step = f"step {progress.step}" if progress.step is not None else "no training state"
    best = f"best val loss {progress.best_val_loss:.4f}" if progress.best_val_loss is not None else "not evaluated yet"
    return f"{step}, {best}"


def _is_main_process() -> bool:
    """Rank 0 under torchrun (which sets RANK before any process group exists), else the single process."""
    return not launched_by_torchrun() or os.environ["RANK"] == "0"
