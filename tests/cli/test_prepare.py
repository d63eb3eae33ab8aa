"""`hellogpt prepare` from the command line: summaries, the up-to-date message, one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hellogpt.cli import app

runner = CliRunner()


def _assert_one_line_user_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture()
def small_text(tmp_path: Path) -> Path:
    path = tmp_path / "small.txt"
    path.write_text("To be, or not to be, that is the question.\n" * 40)
    return path


def test_prepare_writes_the_dataset_and_says_what_it_wrote(poems_dir: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "poems"
    result = runner.invoke(app, ["prepare", str(poems_dir), "--out", str(out_dir)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out_dir}:" in result.stdout and "gpt2" in result.stdout
    assert sorted(path.name for path in out_dir.iterdir()) == ["meta.json", "train.bin", "val.bin"]


def test_a_second_run_says_up_to_date_and_force_prepares_again(small_text: Path, tmp_path: Path) -> None:
    arguments = ["prepare", str(small_text), "--out", str(tmp_path / "out"), "--tokenizer", "char"]
    assert runner.invoke(app, arguments).exit_code == 0
    again = runner.invoke(app, arguments)
    assert again.exit_code == 0 and "is up to date" in again.stdout
    forced = runner.invoke(app, [*arguments, "--force"])
    assert forced.exit_code == 0 and "wrote" in forced.stdout


def test_the_default_output_is_data_slash_source_name(small_text: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["prepare", str(small_text), "--tokenizer", "char"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "small" / "meta.json").is_file()


def test_builtin_pydoc_defaults_to_data_pydoc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["prepare", "builtin:pydoc", "--tokenizer", "char"])
    assert result.exit_code == 0, result.output
    assert "wrote data/pydoc" in result.stdout


def test_builtin_poems_prepares_the_same_ids_as_the_poems_folder(
    poems_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["prepare", "builtin:poems"])
    assert result.exit_code == 0, result.output
    assert "wrote data/poems" in result.stdout
    from_folder = tmp_path / "from-folder"
    assert runner.invoke(app, ["prepare", str(poems_dir), "--out", str(from_folder)]).exit_code == 0
    for split in ("train.bin", "val.bin"):
        builtin_ids = np.fromfile(tmp_path / "data" / "poems" / split, dtype=np.uint16)
        folder_ids = np.fromfile(from_folder / split, dtype=np.uint16)
        assert builtin_ids.size > 0 and np.array_equal(builtin_ids, folder_ids), split


def test_a_missing_path_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["prepare", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "out")])
    _assert_one_line_user_error(result, "nope.txt does not exist")


def test_a_folder_without_text_files_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "corpus").mkdir()
    result = runner.invoke(app, ["prepare", str(tmp_path / "corpus"), "--out", str(tmp_path / "out")])
    _assert_one_line_user_error(result, "no text files matching '*.txt'", "--glob")


def test_an_empty_corpus_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("")
    result = runner.invoke(app, ["prepare", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "out")])
    _assert_one_line_user_error(result, "corpus is empty")


def test_a_file_that_is_not_utf8_names_file_offset_and_the_way_on(tmp_path: Path) -> None:
    source = tmp_path / "legacy.txt"
    source.write_bytes(b"plain ascii then \xff\xfe junk\n")
    result = runner.invoke(app, ["prepare", str(source), "--out", str(tmp_path / "out")])
    _assert_one_line_user_error(result, "legacy.txt", "byte offset 17", "--encoding-errors replace")
    replaced = runner.invoke(app, ["prepare", str(source), "--out", str(tmp_path / "out"), "--encoding-errors", "replace"])
    assert replaced.exit_code == 0, replaced.output


def test_an_output_that_cannot_be_written_is_one_line(small_text: Path) -> None:
    result = runner.invoke(app, ["prepare", str(small_text), "--out", str(small_text / "out")])
    _assert_one_line_user_error(result, "choose another --out")


def test_a_bad_val_fraction_is_one_line(small_text: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["prepare", str(small_text), "--out", str(tmp_path / "out"), "--val-fraction", "1.5"])
    _assert_one_line_user_error(result, "--val-fraction 1.5")


def test_info_describes_a_prepared_folder(small_text: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    assert runner.invoke(app, ["prepare", str(small_text), "--out", str(out_dir), "--tokenizer", "char"]).exit_code == 0
    result = runner.invoke(app, ["info", str(out_dir), "--json"])
    assert result.exit_code == 0, result.output
    assert '"tokenizer": "char"' in result.stdout and '"train_tokens"' in result.stdout


def test_ctrl_c_says_interrupted_exits_130_and_writes_nothing(
    poems_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hellogpt.data import prepare

    real_prepare = prepare.prepare_dataset

    def interrupted_midway(*args, progress, **kwargs):
        def press_ctrl_c(done: int, total: int) -> None:
            progress(done, total)
            if done > 0:
                raise KeyboardInterrupt

        return real_prepare(*args, progress=press_ctrl_c, chunk_chars=2000, **kwargs)

    monkeypatch.setattr(prepare, "prepare_dataset", interrupted_midway)
    out_dir = tmp_path / "out"
    result = runner.invoke(app, ["prepare", str(poems_dir), "--out", str(out_dir)])
    assert result.exit_code == 130, result.output
    assert result.stderr.strip() == "interrupted" and "Traceback" not in result.output
    assert not out_dir.exists()


def test_prepare_trains_a_bpe_on_the_corpus_and_says_its_vocabulary(small_text: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    result = runner.invoke(app, ["prepare", str(small_text), "--out", str(out_dir), "--tokenizer", "bpe:300"])
    assert result.exit_code == 0, result.output
    assert "(bpe:300, vocab " in result.stdout and "uint16" in result.stdout
    assert sorted(path.name for path in out_dir.iterdir()) == ["meta.json", "tokenizer.json", "train.bin", "val.bin"]


@pytest.mark.parametrize("name", ["bpe:7", "bpe:abc"])
def test_a_bad_bpe_size_is_one_line_saying_what_is_accepted(name: str, small_text: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["prepare", str(small_text), "--out", str(tmp_path / "out"), "--tokenizer", name])
    _assert_one_line_user_error(result, f"unknown tokenizer '{name}'", "bpe:N", "256 <= N <= 65536")
