"""Shared fixtures: the poems shipped with the package and the old project's configs in tests/fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hellogpt.data.sources import CORPORA_DIR

# OpenMP threads that spin while waiting make torch 10-20x slower on a CPU shared with other work
# (tests/train/test_loop.py: 58 s -> 5 s on the shared 2-core box). Read when torch loads, so set here,
# before any test module imports torch; subprocesses of `hellogpt` inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Speed probes keep to their fixed rules and time nothing (`system.measure: off`): a test's outcome never depends on
# how busy the machine is. The probes' own tests (tests/hardware/probes) lift it and run on a fake clock.
os.environ.setdefault("HELLOGPT_MEASURE", "off")

FIXTURES = Path(__file__).resolve().parent / "fixtures"
POEMS_DIR = CORPORA_DIR / "poems"


@pytest.fixture(scope="session")
def poems_dir() -> Path:
    """The poems corpus shipped with the package (builtin:poems), read in place, never copied."""
    return POEMS_DIR


@pytest.fixture(scope="session")
def seed_configs() -> Path:
    """The old Hello-GPT flat YAML configs, byte for byte."""
    return FIXTURES / "seed-configs"


@pytest.fixture(autouse=True)
def _torch_threads_restored() -> Iterator[None]:
    """`chat`/`serve` choose their decoding threads (`generate.choose_decode_threads`), which is process-wide:
    each test starts with the thread count the session started with."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
