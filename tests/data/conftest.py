"""Shared corpora for the data tests: the poems beside the repository, prepared once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from hellogpt.data.prepare import PrepareResult, prepare_dataset

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
POEMS = SHARED_DATA / "poems"


@pytest.fixture(scope="session")
def poems_dir() -> Path:
    if not POEMS.is_dir():
        pytest.skip(f"the shared poems corpus is not at {POEMS}")
    return POEMS


@pytest.fixture(scope="session")
def prepared_poems(poems_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> PrepareResult:
    """The poems prepared with GPT-2 BPE (read-only for the tests that use it)."""
    return prepare_dataset([str(poems_dir)], tmp_path_factory.mktemp("poems") / "data")
