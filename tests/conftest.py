"""Shared fixtures: where the shared corpora and the old project's configs live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# OpenMP threads that spin while waiting make torch 10-20x slower on a CPU shared with other work
# (tests/train/test_loop.py: 58 s -> 5 s on the shared 2-core box). Read when torch loads, so set here,
# before any test module imports torch; subprocesses of `hellogpt` inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The public-domain corpora beside the repository (read in place, never copied)."""
    path = SHARED / "data"
    if not path.is_dir():
        pytest.skip(f"shared corpora not found at {path}")
    return path


@pytest.fixture(scope="session")
def seed_configs() -> Path:
    """The old Hello-GPT flat YAML configs."""
    path = SHARED / "seed-configs"
    if not path.is_dir():
        pytest.skip(f"seed configs not found at {path}")
    return path
