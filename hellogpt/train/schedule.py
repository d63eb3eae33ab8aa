"""The learning-rate schedule: linear warmup, then cosine decay to `min_lr` (the seed's, nanoGPT's)."""

from __future__ import annotations

import math

from hellogpt.config.schema import OptimConfig


def learning_rate_at(step: int, optim: OptimConfig) -> float:
    """The rate for the optimizer step with 0-based index `step`; constant when `decay_lr` is false."""
    if not optim.decay_lr:
        return optim.learning_rate
    if step < optim.warmup_iters:
        return optim.learning_rate * (step + 1) / (optim.warmup_iters + 1)
    if step >= optim.lr_decay_iters:
        return optim.min_lr
    decay_span = optim.lr_decay_iters - optim.warmup_iters
    progress = (step - optim.warmup_iters) / decay_span
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return optim.min_lr + cosine * (optim.learning_rate - optim.min_lr)
