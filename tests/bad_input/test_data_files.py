"""Token bins that disagree with their meta.json (cut short, damaged, from another run), and the old tool's
folders with a torn bin: refused when the dataset is opened, in one line naming the file and `prepare --force`,
never a memory-map traceback, and nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.bad_input.test_disk_full import assert_one_error_line, invoke, snapshot
from tests.train.conftest import TINY_SETTINGS

TEXT = "To be, or not to be, that is the question.\n" * 40


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A char-level dataset written by `hellogpt prepare` (uint16 bins)."""
    source = tmp_path / "small.txt"
    source.write_text(TEXT)
    out_dir = tmp_path / "data"
    assert invoke("prepare", str(source), "--out", str(out_dir), "--tokenizer", "char").exit_code == 0
    return out_dir


def _cut(path: Path, n_bytes: int) -> None:
    path.write_bytes(path.read_bytes()[:-n_bytes])


@pytest.mark.parametrize("bin_name", ["train.bin", "val.bin"])
def test_a_bin_cut_mid_token_names_the_file_and_prepare_force(dataset: Path, bin_name: str) -> None:
    _cut(dataset / bin_name, 1)
    before = snapshot(dataset)
    result = invoke("info", str(dataset))
    assert_one_error_line(
        result, f"{dataset / bin_name} is", "not a whole number of uint16 tokens (2 bytes each)",
        f"hellogpt prepare SOURCE --out {dataset} --force",
    )
    assert snapshot(dataset) == before


def test_a_bin_shorter_than_meta_records_names_both_counts(dataset: Path) -> None:
    recorded = json.loads((dataset / "meta.json").read_text())["train_tokens"]
    _cut(dataset / "train.bin", 2 * 10)
    result = invoke("info", str(dataset))
    assert_one_error_line(
        result, f"{dataset / 'train.bin'} holds {recorded - 10:,} tokens", f"records {recorded:,}", "--force"
    )


def test_a_bin_from_another_run_is_refused(dataset: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.txt"
    other.write_text(TEXT * 2)
    assert invoke("prepare", str(other), "--out", str(tmp_path / "other"), "--tokenizer", "char").exit_code == 0
    (dataset / "val.bin").write_bytes((tmp_path / "other" / "val.bin").read_bytes())
    result = invoke("info", str(dataset))
    assert_one_error_line(result, f"{dataset / 'val.bin'} holds", "come from different runs", "--force")


def test_training_on_a_damaged_bin_stops_before_the_first_step(dataset: Path, tmp_path: Path) -> None:
    _cut(dataset / "train.bin", 1)
    settings = [argument for setting in TINY_SETTINGS for argument in ("--set", setting)]
    result = invoke("train", "--data", str(dataset), "--checkpoint", str(tmp_path / "never.pt"), "--plain", *settings)
    assert_one_error_line(result, f"{dataset / 'train.bin'} is", "--force")
    assert not (tmp_path / "never.pt").exists()


def test_an_old_tool_folder_with_an_odd_sized_bin_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "old"
    folder.mkdir()
    np.arange(1000, dtype=np.uint16).tofile(folder / "train.bin")
    (folder / "validate.bin").write_bytes(np.arange(100, dtype=np.uint16).tobytes() + b"\x01")
    before = snapshot(folder)
    result = invoke("info", str(folder))
    assert_one_error_line(result, f"{folder / 'validate.bin'} is 201 bytes", "uint16", "--force")
    assert snapshot(folder) == before
