"""The learning-rate schedule: linear warmup, cosine decay to min_lr, constant when decay is off."""

from __future__ import annotations

import math

import pytest

from hellogpt.config.schema import OptimConfig
from hellogpt.train.schedule import learning_rate_at

OPTIM = OptimConfig(learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, lr_decay_iters=110)


def test_warmup_rises_linearly_to_the_peak() -> None:
    assert learning_rate_at(0, OPTIM) == pytest.approx(1e-3 * 1 / 11)
    assert learning_rate_at(4, OPTIM) == pytest.approx(1e-3 * 5 / 11)
    assert learning_rate_at(9, OPTIM) == pytest.approx(1e-3 * 10 / 11)


def test_cosine_starts_at_the_peak_and_halves_in_the_middle() -> None:
    assert learning_rate_at(10, OPTIM) == pytest.approx(1e-3)
    assert learning_rate_at(60, OPTIM) == pytest.approx((1e-3 + 1e-4) / 2)
    assert learning_rate_at(35, OPTIM) == pytest.approx(1e-4 + 0.5 * (1 + math.cos(math.pi / 4)) * 9e-4)


def test_after_the_decay_the_rate_stays_at_min_lr() -> None:
    assert learning_rate_at(110, OPTIM) == pytest.approx(1e-4)
    assert learning_rate_at(10_000, OPTIM) == pytest.approx(1e-4)


def test_without_decay_the_rate_is_constant_from_the_first_step() -> None:
    constant = OPTIM.model_copy(update={"decay_lr": False})
    assert {learning_rate_at(step, constant) for step in (0, 5, 50, 500)} == {1e-3}


def test_no_warmup_starts_at_the_peak() -> None:
    assert learning_rate_at(0, OPTIM.model_copy(update={"warmup_iters": 0})) == pytest.approx(1e-3)
