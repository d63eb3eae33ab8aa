"""`hellogpt export CKPT DIR --force` replaces only a previous export or an empty directory: a folder of the
user's files, the checkpoints folder, the current folder and its parents are refused in one line, untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from hellogpt.checkpoints.format import save_checkpoint
from tests.bad_input.test_disk_full import assert_one_error_line, invoke, snapshot
from tests.cli.test_export import as_checkpoint
from tests.model.test_hf import tiny_payload


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "checkpoints" / "tiny.pt"
    path.parent.mkdir()
    save_checkpoint(path, as_checkpoint(tiny_payload()))
    return path


def test_force_refuses_a_folder_holding_the_users_notes(checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes")
    (folder / "config.json").write_text("{}")
    before = snapshot(tmp_path)
    result = invoke("export", str(checkpoint), str(folder), "--force")
    assert_one_error_line(
        result,
        f"refusing to replace {folder}: it holds {folder / 'notes.txt'}",
        "which hellogpt export does not write",
        "choose another OUT_DIR",
    )
    assert snapshot(tmp_path) == before


def test_force_refuses_the_checkpoints_folder(checkpoint: Path, tmp_path: Path) -> None:
    before = snapshot(tmp_path)
    result = invoke("export", str(checkpoint), str(checkpoint.parent), "--force")
    assert_one_error_line(result, f"it holds {checkpoint}")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("target", [".", "..", "sub/.."])
def test_force_refuses_the_current_folder_and_its_parents(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    monkeypatch.chdir(work)
    before = snapshot(tmp_path)
    result = invoke("export", str(checkpoint), target, "--force")
    assert_one_error_line(result, f"refusing to replace {target}: it is the current folder or holds it")
    assert snapshot(tmp_path) == before


def test_force_refuses_a_folder_with_a_subfolder(checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "exported"
    (folder / "nested").mkdir(parents=True)
    result = invoke("export", str(checkpoint), str(folder), "--force")
    assert_one_error_line(result, f"it holds {folder / 'nested'}")
    assert (folder / "nested").is_dir()


def test_force_replaces_an_empty_folder(checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "exported"
    folder.mkdir()
    result = invoke("export", str(checkpoint), str(folder), "--force")
    assert result.exit_code == 0, result.output
    assert (folder / "model.safetensors").is_file()


def test_force_replaces_a_previous_export(checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "exported"
    assert invoke("export", str(checkpoint), str(folder)).exit_code == 0
    (folder / "generation_config.json").write_text("{}")  # what transformers' save_pretrained adds
    result = invoke("export", str(checkpoint), str(folder), "--force")
    assert result.exit_code == 0, result.output
    assert not (folder / "generation_config.json").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoints", "exported"]


def test_without_force_an_existing_folder_is_refused(checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "exported"
    folder.mkdir()
    result = invoke("export", str(checkpoint), str(folder))
    assert_one_error_line(result, "already exists", "--force")


def test_a_file_as_out_dir_is_refused_even_with_force(checkpoint: Path, tmp_path: Path) -> None:
    before = snapshot(tmp_path)
    result = invoke("export", str(checkpoint), str(checkpoint), "--force")
    assert_one_error_line(result, f"{checkpoint} is a file")
    assert snapshot(tmp_path) == before
