"""The resumable state of a run: what it has reached, where its checkpoints go, and reading it back for --resume.

Beside `hellogpt.checkpoints` (the file format): this module decides what a run saves (the best model in NAME.pt, the
latest state in NAME.latest.pt) and how a resumed run takes up its step, losses, RNGs and data sampler.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from hellogpt.checkpoints.format import Checkpoint, load_checkpoint, peek_step, save_checkpoint
from hellogpt.checkpoints.lora_base import verified_base
from hellogpt.checkpoints.paths import latest_checkpoint_path
from hellogpt.config.schema import RunConfig
from hellogpt.errors import UserError
from hellogpt.train.distributed import DistributedContext
from hellogpt.train.lora import frozen_dtype
from hellogpt.train.rng_state import generator_from_state


@dataclass
class RunProgress:
    """What changes while training and goes into the checkpoint."""

    step: int = 0
    best_val_loss: Optional[float] = None
    train_loss: Optional[float] = None
    val_loss: Optional[float] = None
    last_checkpoint_step: Optional[int] = None
    last_eval_step: Optional[int] = None
    pending_eval: bool = False
    checkpoint_paths: list[str] = field(default_factory=list)

    @classmethod
    def resumed_from(cls, checkpoint: Checkpoint) -> "RunProgress":
        return cls(
            step=checkpoint.step or 0,
            best_val_loss=checkpoint.best_val_loss,
            train_loss=checkpoint.train_loss,
            val_loss=checkpoint.val_loss,
            last_checkpoint_step=checkpoint.step,
            pending_eval=checkpoint.pending_eval,
        )


@dataclass
class CheckpointLayout:
    """A new best goes to the checkpoint path; so does every save with always_save_checkpoint. Otherwise the
    latest state goes beside it (NAME.latest.pt), so the best model is never overwritten.

    `has_saved` is False for a run that has not saved yet (a new one): the files at its paths then belong to an
    earlier run (replaced with --overwrite), and its first save removes the one it does not write, so that an old
    NAME.pt or NAME.latest.pt is never taken for this run's state by --resume, chat or info."""

    checkpoint_path: Path
    always_save: bool
    has_saved: bool = True

    @property
    def latest_path(self) -> Path:
        return latest_checkpoint_path(self.checkpoint_path)

    def path_for(self, reason: str) -> Path:
        return self.checkpoint_path if reason == "best" or self.always_save else self.latest_path

    def write(self, reason: str, checkpoint: Checkpoint) -> Path:
        """Save `checkpoint` where `reason` puts it; a write to the checkpoint path makes the latest state stale."""
        path = self.path_for(reason)
        save_checkpoint(path, checkpoint)
        if path == self.checkpoint_path:
            self.latest_path.unlink(missing_ok=True)
        elif not self.has_saved:
            self.checkpoint_path.unlink(missing_ok=True)
        self.has_saved = True
        return path


def resume_source(checkpoint_path: Path) -> Path:
    """The file `--resume` continues: NAME.latest.pt when it is newer than NAME.pt, else NAME.pt.

    An unreadable NAME.latest.pt is an error, not a reason to fall back silently to the older NAME.pt."""
    latest = latest_checkpoint_path(checkpoint_path)
    if not latest.is_file():
        return checkpoint_path
    latest_step = peek_step(latest)
    if latest_step is None:
        older = f"the older {checkpoint_path}" if checkpoint_path.is_file() else "nothing (start anew without --resume)"
        raise UserError(
            f"--resume: {latest}, the run's latest state, cannot be read (truncated or corrupt): "
            f"move it aside (e.g. to {latest.name}.broken) to resume from {older}"
        )
    if not checkpoint_path.is_file():
        return latest
    best_step = peek_step(checkpoint_path)
    return latest if best_step is None or latest_step > best_step else checkpoint_path


def load_resume_checkpoint(checkpoint_path: Path, config: RunConfig) -> tuple[Path, Checkpoint]:
    """The newest resumable state of the run: NAME.latest.pt when newer than NAME.pt."""
    path = resume_source(checkpoint_path)
    if not path.exists():
        raise UserError(f"--resume: checkpoint {checkpoint_path} does not exist; train without --resume to start it")
    checkpoint = load_checkpoint(path)
    checkpoint.require_resumable(path)
    step = checkpoint.step or 0
    if step >= config.train.max_iters and not checkpoint.pending_eval:
        raise UserError(
            f"{path} is already at step {step}, train.max_iters is {config.train.max_iters}: "
            f"raise it to continue, e.g. --set train.max_iters={max(step * 2, 1)}"
        )
    return path, checkpoint


def weights_of(checkpoint: Checkpoint) -> dict[str, Any]:
    """A checkpoint as the starting weights `TrainingRun(init=...)` takes."""
    return {
        "model_args": checkpoint.model_args.to_dict(),
        "model": checkpoint.model,
        "tokenizer": checkpoint.tokenizer,
        "origin": checkpoint.origin,
    }


def lora_weights_of(checkpoint: Checkpoint, dtype: torch.dtype) -> dict[str, Any]:
    """A LoRA checkpoint to resume: its base, loaded frozen for a run in `dtype` and checked against the recorded
    hash, and its adapters."""
    base = verified_base(checkpoint.base or {}, frozen_dtype(dtype))
    return {**weights_of(checkpoint), "model": base, "adapters": checkpoint.model, "base": checkpoint.base}


def restored_sampler(
    saved: Optional[dict[str, Any]], context: DistributedContext, fallback: np.random.Generator
) -> np.random.Generator:
    """This rank's data sampler as saved; a run resumed on another number of ranks keeps fresh seeds."""
    if not saved or saved.get("world_size") != context.world_size:
        return fallback
    return generator_from_state(saved["states"][context.rank])


def restored_rng(checkpoint: Checkpoint, context: DistributedContext) -> dict[str, Any]:
    """This rank's global RNGs as saved; rank 0's when the run was saved on another number of ranks."""
    rank_rngs = checkpoint.rank_rngs or []
    return rank_rngs[context.rank] if len(rank_rngs) == context.world_size else (checkpoint.rng or {})
