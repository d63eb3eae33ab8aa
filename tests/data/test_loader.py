"""The loader: memory-mapped windows, shifted targets, clear errors, and the old tool's folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hellogpt.data.loader import describe_dataset, open_dataset
from hellogpt.data.prepare import PrepareResult, prepare_dataset
from hellogpt.errors import UserError


def _write_legacy_folder(folder: Path, train: np.ndarray, val: np.ndarray) -> Path:
    folder.mkdir()
    train.astype(np.uint16).tofile(folder / "train.bin")
    val.astype(np.uint16).tofile(folder / "validate.bin")
    return folder


def test_batches_are_int64_windows_and_targets_shifted_by_one(prepared_poems: PrepareResult) -> None:
    dataset = open_dataset(prepared_poems.out_dir)
    x, y = dataset.sample_batch("train", batch_size=4, block_size=16, rng=np.random.default_rng(0))
    assert x.shape == y.shape == (4, 16)
    assert x.dtype == y.dtype == np.int64
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])


def test_windows_are_cut_from_the_file_at_random_starts(tmp_path: Path) -> None:
    folder = _write_legacy_folder(tmp_path / "old", np.arange(1000), np.arange(100))
    x, y = open_dataset(folder).sample_batch("train", batch_size=8, block_size=10, rng=np.random.default_rng(1))
    starts = x[:, 0]
    np.testing.assert_array_equal(x, starts[:, None] + np.arange(10))
    np.testing.assert_array_equal(y, starts[:, None] + np.arange(1, 11))
    assert len(set(starts.tolist())) > 1


def test_the_same_rng_state_gives_the_same_batch(prepared_poems: PrepareResult) -> None:
    dataset = open_dataset(prepared_poems.out_dir)
    first = dataset.sample_batch("val", 2, 8, np.random.default_rng(7))
    second = dataset.sample_batch("val", 2, 8, np.random.default_rng(7))
    np.testing.assert_array_equal(first[0], second[0])


def test_splits_are_memory_mapped_not_loaded(prepared_poems: PrepareResult) -> None:
    dataset = open_dataset(prepared_poems.out_dir)
    assert isinstance(dataset.tokens("train"), np.memmap)
    assert dataset.num_tokens("train") == prepared_poems.train_tokens
    assert dataset.num_tokens("val") == prepared_poems.val_tokens


def test_a_split_shorter_than_block_size_plus_one_names_split_length_and_fix(tmp_path: Path) -> None:
    folder = _write_legacy_folder(tmp_path / "old", np.arange(1000), np.arange(50))
    with pytest.raises(UserError, match=r"val split .* has 50 tokens, fewer than block_size \+ 1 = 65.*block_size"):
        open_dataset(folder).sample_batch("val", 2, 64, np.random.default_rng(0))


def test_a_split_of_exactly_block_size_plus_one_works(tmp_path: Path) -> None:
    folder = _write_legacy_folder(tmp_path / "old", np.arange(17), np.arange(17))
    x, y = open_dataset(folder).sample_batch("train", 3, 16, np.random.default_rng(0))
    np.testing.assert_array_equal(x[0], np.arange(16))
    np.testing.assert_array_equal(y[0], np.arange(1, 17))


def test_an_old_hello_gpt_folder_is_read_as_gpt2(tmp_path: Path) -> None:
    folder = _write_legacy_folder(tmp_path / "old", np.array([15496, 995] * 50), np.array([15496, 995] * 10))
    dataset = open_dataset(folder)
    assert dataset.tokenizer.name == "gpt2"
    assert dataset.num_tokens("train") == 100 and dataset.num_tokens("val") == 20
    assert dataset.tokenizer.decode(dataset.tokens("val")[:2].tolist()) == "Hello world"


def test_a_missing_folder_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist: create it with hellogpt prepare"):
        open_dataset(tmp_path / "nowhere")


def test_a_folder_without_meta_or_old_bins_is_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is not a dataset"):
        open_dataset(tmp_path)


def test_a_corrupt_meta_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot read .*meta.json"):
        open_dataset(tmp_path)


def test_a_missing_bin_is_a_user_error(tmp_path: Path) -> None:
    source = tmp_path / "a.txt"
    source.write_text("hello there\n" * 100)
    result = prepare_dataset([str(source)], tmp_path / "out", tokenizer="char")
    (result.out_dir / "val.bin").unlink()
    with pytest.raises(UserError, match="val.bin is missing"):
        open_dataset(result.out_dir)


def test_describe_dataset_reports_what_info_shows(prepared_poems: PrepareResult) -> None:
    description = describe_dataset(prepared_poems.out_dir)
    assert description["tokenizer"] == "gpt2"
    assert description["vocab_size"] == 50257
    assert description["dtype"] == "uint16"
    assert description["train_tokens"] == prepared_poems.train_tokens
    assert description["val_tokens"] == prepared_poems.val_tokens
    assert len(description["sources"]) == 5
    assert description["created_by"] == json.loads((prepared_poems.out_dir / "meta.json").read_text())["hellogpt_version"]
    json.dumps(description)


def _char_dataset(tmp_path: Path) -> Path:
    source = tmp_path / "a.txt"
    source.write_text("hello there\n" * 100)
    return prepare_dataset([str(source)], tmp_path / "out", tokenizer="char").out_dir


def test_a_bin_that_is_not_whole_tokens_is_refused_on_open(tmp_path: Path) -> None:
    out_dir = _char_dataset(tmp_path)
    with open(out_dir / "train.bin", "ab") as train_bin:
        train_bin.write(b"\x00")
    with pytest.raises(UserError, match=r"train.bin is .* bytes, not a whole number of uint16 tokens.*--force"):
        open_dataset(out_dir)


def test_a_bin_whose_count_differs_from_meta_is_refused_on_open(tmp_path: Path) -> None:
    out_dir = _char_dataset(tmp_path)
    with open(out_dir / "val.bin", "ab") as val_bin:
        val_bin.write(b"\x00\x00")
    with pytest.raises(UserError, match=r"val.bin holds \d+ tokens but .*meta.json records \d+.*--force"):
        open_dataset(out_dir)


def test_a_meta_without_token_counts_still_opens(tmp_path: Path) -> None:
    out_dir = _char_dataset(tmp_path)
    meta = json.loads((out_dir / "meta.json").read_text())
    del meta["train_tokens"], meta["val_tokens"]
    (out_dir / "meta.json").write_text(json.dumps(meta))
    with open(out_dir / "train.bin", "ab") as train_bin:
        train_bin.write(b"\x00\x00")  # nothing to compare the count with
    assert open_dataset(out_dir).num_tokens("train") > 0


def test_an_old_tool_bin_of_an_odd_size_is_refused(tmp_path: Path) -> None:
    folder = _write_legacy_folder(tmp_path / "old", np.arange(100), np.arange(20))
    with open(folder / "train.bin", "ab") as train_bin:
        train_bin.write(b"\x00")
    with pytest.raises(UserError, match=r"train.bin is 201 bytes, not a whole number of uint16 tokens"):
        open_dataset(folder)
