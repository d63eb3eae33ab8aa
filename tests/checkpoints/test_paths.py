"""Where a checkpoint name leads: a bare name under checkpoints/, a path kept as given."""

from __future__ import annotations

from pathlib import Path

import pytest

from hellogpt.checkpoints.paths import resolve_checkpoint_path


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("poe", "checkpoints/poe.pt"),
        ("poe.pt", "checkpoints/poe.pt"),
        ("runs/poe", "runs/poe"),
        ("./poe.pt", "poe.pt"),
    ],
)
def test_bare_names_resolve_under_checkpoints_and_paths_are_kept(argument: str, expected: str) -> None:
    assert resolve_checkpoint_path(argument) == Path(expected)


def test_an_existing_file_in_the_current_folder_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "local.pt").write_bytes(b"")
    assert resolve_checkpoint_path("local.pt") == Path("local.pt")
