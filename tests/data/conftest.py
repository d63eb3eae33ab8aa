"""The poems corpus shipped with the package, prepared once per session for the data tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from hellogpt.data.prepare import PrepareResult, prepare_dataset


@pytest.fixture(scope="session")
def prepared_poems(poems_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> PrepareResult:
    """The poems prepared with GPT-2 BPE (read-only for the tests that use it)."""
    return prepare_dataset([str(poems_dir)], tmp_path_factory.mktemp("poems") / "data")
