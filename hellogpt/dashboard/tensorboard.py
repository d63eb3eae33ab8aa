"""Optional TensorBoard logging (`--tensorboard`), into `<run folder>/tensorboard/`."""

from __future__ import annotations

import importlib.util
from typing import Any, Optional

from hellogpt.dashboard.records import run_directory
from hellogpt.errors import UserError
from hellogpt.train.events import EvalEvent, RunStarted, StepEvent, TrainingEvent

INSTALL_HINT = "--tensorboard needs the tensorboard package: pip install tensorboard"


def require_tensorboard() -> None:
    """Fail before training starts when the package is missing."""
    try:
        found = importlib.util.find_spec("tensorboard") is not None
    except ValueError:  # a module set to None in sys.modules
        found = False
    if not found:
        raise UserError(INSTALL_HINT)


class TensorBoardLogger:
    """Writes train/val loss, learning rate, grad norm, throughput, MFU and eval samples as TensorBoard events."""

    def __init__(self) -> None:
        require_tensorboard()
        self._writer: Optional[Any] = None

    def handle(self, event: TrainingEvent) -> None:
        if isinstance(event, RunStarted):
            from torch.utils.tensorboard import SummaryWriter

            self.close()
            self._writer = SummaryWriter(log_dir=str(run_directory(event) / "tensorboard"))
            return
        writer = self._writer
        if writer is None:
            return
        if isinstance(event, StepEvent):
            writer.add_scalar("loss/train", event.loss, event.step)
            writer.add_scalar("optim/learning_rate", event.learning_rate, event.step)
            writer.add_scalar("optim/grad_norm", event.grad_norm, event.step)
            writer.add_scalar("speed/tokens_per_second", event.tokens_per_second, event.step)
            writer.add_scalar("speed/ms_per_step", event.ms_per_step, event.step)
            if event.mfu is not None:
                writer.add_scalar("speed/mfu", event.mfu, event.step)
        elif isinstance(event, EvalEvent):
            writer.add_scalar("loss/val", event.val_loss, event.step)
            writer.add_scalar("loss/train_eval", event.train_loss, event.step)
            if event.sample:
                writer.add_text("sample", event.sample, event.step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
