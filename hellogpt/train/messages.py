"""The one-line messages a run ends with: why it stopped, what was saved, and what to do next."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

from hellogpt.train.events import RunEnd
from hellogpt.train.readings import Reading
from hellogpt.train.resume import RunProgress

# How much more than the measured need a too-short --max-time is told to give.
BUDGET_MARGIN = 1.2


def divergence_message(reading: Reading, progress: RunProgress, checkpoint_path: Path, learning_rate: float) -> str:
    """Which step went bad and with what, that it was never applied, and which checkpoint is kept."""
    bad = f"loss {reading.loss}" if not math.isfinite(reading.loss) else f"gradient norm {reading.grad_norm}"
    kept = (
        f"the last good checkpoint {checkpoint_path} (step {progress.last_checkpoint_step}) is kept"
        if progress.last_checkpoint_step is not None
        else "no checkpoint was written by this run"
    )
    return (
        f"training diverged: {bad} at step {reading.step}; stopped before applying it, {kept}; "
        f"lower optim.learning_rate (now {learning_rate:g}) or raise optim.warmup_iters"
    )


def finish_message(reason: RunEnd, progress: RunProgress, checkpoint_path: Path, latest_path: Path) -> Optional[str]:
    """After a stop or the end of the budget: what was saved where, and how to continue."""
    if reason not in (RunEnd.INTERRUPTED, RunEnd.TIME_BUDGET):
        return None
    step = progress.step
    what = "interrupted" if reason == RunEnd.INTERRUPTED else "time budget reached"
    if progress.last_checkpoint_step != step:
        return f"{what} at step {step}: nothing new to save"
    saved = progress.checkpoint_paths[-1]
    text = f"{what} at step {step}: saved {saved}"
    if saved == str(latest_path) and checkpoint_path.exists():
        text += f" (the latest state; the best model stays in {checkpoint_path})"
    if reason == RunEnd.INTERRUPTED:
        text += "; continue with --resume" + (" (its evaluation runs first)" if progress.pending_eval else "")
    return text


def budget_too_short_message(max_seconds: float, step_seconds: float, closing_seconds: float) -> str:
    """A --max-time that ended before the first step: how long a step and the closing work take here."""
    needed = step_seconds + closing_seconds
    return (
        f"--max-time {max_seconds:g}s ended before the first step could finish: a step takes about {step_seconds:.0f} s "
        f"here and the closing evaluation and save about {closing_seconds:.0f} s more; nothing new was saved: "
        f"give --max-time at least {math.ceil(needed * BUDGET_MARGIN)}s, or lower train.gradient_accumulation_steps"
    )
