"""Atomic writes: the old file stays until the new one is whole, and a refused write is one line naming the file."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import IO, Any, Optional

import pytest
import torch

from hellogpt import files
from hellogpt.errors import UserError
from hellogpt.files import FileWriteError, atomic_file, write_bytes_atomically, write_text_atomically
from tests.bad_input.test_disk_full import FillDisk, disk_filler


@pytest.fixture
def fill_disk(monkeypatch: pytest.MonkeyPatch) -> FillDisk:
    """fill_disk(after_bytes): writes fail with ENOSPC once `after_bytes` more bytes are written."""
    return disk_filler(monkeypatch)


def test_a_complete_write_replaces_the_file(tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("old")
    write_text_atomically(target, "new")
    assert target.read_text() == "new"
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]


def test_a_new_file_gets_the_mode_of_any_new_file(tmp_path: Path) -> None:
    write_bytes_atomically(tmp_path / "data.bin", b"1")
    reference = tmp_path / "reference"
    reference.write_bytes(b"1")
    assert (tmp_path / "data.bin").stat().st_mode == reference.stat().st_mode


def test_a_full_disk_keeps_the_old_file_and_names_it(tmp_path: Path, fill_disk: FillDisk) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("old")
    fill_disk(after_bytes=2)
    with pytest.raises(FileWriteError, match=rf"no space left on device writing {target}: [\d,.]+ MB free on /"):
        write_text_atomically(target, "much longer")
    assert target.read_text() == "old"
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]


def test_torch_save_on_a_full_disk_is_the_same_one_line(tmp_path: Path, fill_disk: FillDisk) -> None:
    """torch.save turns the failed write into a RuntimeError ("unexpected pos"); the OSError behind it is found."""
    target = tmp_path / "model.pt"
    fill_disk(after_bytes=100)
    with pytest.raises(FileWriteError, match=f"no space left on device writing {target}"):
        with atomic_file(target) as file:
            torch.save({"weights": torch.zeros(10_000)}, file)
    assert list(tmp_path.iterdir()) == []


def test_a_refused_write_is_a_user_error_and_still_an_os_error(tmp_path: Path, fill_disk: FillDisk) -> None:
    """The CLI prints it as one line; callers that treat a failed write as soft (chat /save, caches) still catch it."""
    fill_disk(after_bytes=0)
    with pytest.raises(OSError) as caught:
        write_bytes_atomically(tmp_path / "cache.json", b"{}")
    assert isinstance(caught.value, UserError)
    assert caught.value.errno == errno.ENOSPC


def test_a_missing_permission_names_the_file_and_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(path: Path, mode: str = "wb", encoding: Optional[str] = None) -> IO[Any]:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(files, "open_for_writing", denied)
    target = tmp_path / "notes.txt"
    expected = f"cannot write {target}: permission denied; check the permissions of {tmp_path}"
    with pytest.raises(FileWriteError, match=expected):
        write_text_atomically(target, "text")


def test_an_error_that_is_not_about_the_disk_passes_through(tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("old")
    with pytest.raises(ValueError, match="a bug"):
        with atomic_file(target, "w") as file:
            file.write("half")
            raise ValueError("a bug")
    assert target.read_text() == "old"
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]


def test_a_path_through_a_file_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    with pytest.raises(FileWriteError, match="a part of that path is a file, not a folder"):
        write_text_atomically(blocker / "notes.txt", "text")
