"""The resume state's RNGs survive a checkpoint round trip: restoring them repeats the same draws."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
import torch

from hellogpt.checkpoints.format import load_checkpoint, save_checkpoint
from hellogpt.train.rng_state import capture_rng_state, generator_from_state, generator_state, restore_rng_state
from tests.checkpoints.conftest import tiny_checkpoint


def test_restoring_rng_state_repeats_the_same_draws(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's legacy state
    save_checkpoint(tmp_path / "rng.pt", dataclasses.replace(tiny_checkpoint(), rng=capture_rng_state()))
    first = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist())
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt").rng or {})
    assert (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist()) == first


def test_sampler_generator_continues_after_a_round_trip(tmp_path: Path) -> None:
    generator = np.random.default_rng(5)
    generator.integers(0, 100, 10)
    sampler = {"kind": "numpy", "world_size": 1, "states": [generator_state(generator)]}
    save_checkpoint(tmp_path / "s.pt", dataclasses.replace(tiny_checkpoint(), sampler=sampler))
    resumed = generator_from_state((load_checkpoint(tmp_path / "s.pt").sampler or {})["states"][0])
    assert resumed.integers(0, 1000, 5).tolist() == generator.integers(0, 1000, 5).tolist()
