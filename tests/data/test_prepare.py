"""`prepare_dataset`: bins that decode back to the sources, disjoint splits, honest meta, atomic outputs."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import sys
from pathlib import Path

import numpy as np
import pytest

from hellogpt import __version__
from hellogpt.data import prepare
from hellogpt.data.loader import open_dataset
from hellogpt.data.prepare import PrepareResult, SplitPlan, plan_split, prepare_dataset
from hellogpt.data.tokenizer import CharTokenizer, gpt2_tokenizer
from hellogpt.errors import UserError


def _source_texts(folder: Path) -> dict[str, str]:
    return {str(path): path.read_text(encoding="utf-8") for path in sorted(folder.glob("*.txt"))}


def _decoded_documents(out_dir: Path, split: str) -> list[str]:
    """A GPT-2 split decoded and cut at its end-of-text separators."""
    dataset = open_dataset(out_dir)
    ids = np.fromfile(out_dir / f"{split}.bin", dtype=np.uint16).tolist()
    documents, current = [], []
    for token_id in ids:
        if token_id == dataset.tokenizer.eot_id:
            documents.append(current)
            current = []
        else:
            current.append(token_id)
    documents.append(current)
    return [dataset.tokenizer.decode(document) for document in documents]


def _files_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def test_bins_decode_back_to_the_source_texts(prepared_poems: PrepareResult, poems_dir: Path) -> None:
    decoded = _decoded_documents(prepared_poems.out_dir, "train") + _decoded_documents(prepared_poems.out_dir, "val")
    assert sorted(decoded) == sorted(_source_texts(poems_dir).values())


def test_validation_is_whole_documents_never_in_training(prepared_poems: PrepareResult, poems_dir: Path) -> None:
    texts = _source_texts(poems_dir)
    meta = prepared_poems.meta
    val_texts = _decoded_documents(prepared_poems.out_dir, "val")
    train_texts = _decoded_documents(prepared_poems.out_dir, "train")
    assert meta["split"] == "documents"
    assert sorted(val_texts) == sorted(texts[name] for name in meta["val_documents"])
    assert not set(val_texts) & set(train_texts)
    assert 0.05 < prepared_poems.val_tokens / (prepared_poems.train_tokens + prepared_poems.val_tokens) < 0.2


def test_meta_describes_tokenizer_dtype_counts_and_every_source(prepared_poems: PrepareResult, poems_dir: Path) -> None:
    meta = json.loads((prepared_poems.out_dir / "meta.json").read_text())
    files = sorted(poems_dir.glob("*.txt"))
    assert meta["tokenizer"] == {"kind": "gpt2"}
    assert meta["vocab_size"] == 50257 and meta["eot_id"] == 50256 and meta["dtype"] == "uint16"
    assert meta["hellogpt_version"] == __version__
    assert meta["train_tokens"] * 2 == (prepared_poems.out_dir / "train.bin").stat().st_size
    assert meta["val_tokens"] * 2 == (prepared_poems.out_dir / "val.bin").stat().st_size
    assert meta["sources"] == [
        {"path": str(path.resolve()), "size": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        for path in files
    ]


def test_train_ids_equal_encoding_each_document_whole(prepared_poems: PrepareResult, poems_dir: Path) -> None:
    tokenizer = gpt2_tokenizer()
    texts = _source_texts(poems_dir)
    expected: list[int] = []
    for name, text in texts.items():
        if name not in prepared_poems.meta["val_documents"]:
            expected += ([tokenizer.eot_id] if expected else []) + tokenizer.encode(text)
    assert np.fromfile(prepared_poems.out_dir / "train.bin", dtype=np.uint16).tolist() == expected


def test_small_chunks_give_the_same_bins(prepared_poems: PrepareResult, poems_dir: Path, tmp_path: Path) -> None:
    result = prepare_dataset([str(poems_dir)], tmp_path / "chunked", chunk_chars=2000)
    for split in ("train", "val"):
        assert (result.out_dir / f"{split}.bin").read_bytes() == (prepared_poems.out_dir / f"{split}.bin").read_bytes()


@pytest.fixture
def worker_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Encode in worker processes whatever the corpus size (normally only from 32 MB on)."""
    monkeypatch.setattr(prepare, "PROCESS_POOL_MIN_BYTES", 0)
    monkeypatch.setattr(prepare, "_usable_cores", lambda: 2)


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
@pytest.mark.parametrize("tokenizer", ["gpt2", "char"])
def test_worker_processes_write_the_same_bins_as_threads(
    tokenizer: str, start_method: str, poems_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prepare, "_worker_start_method", lambda: start_method)
    threaded = prepare_dataset([str(poems_dir)], tmp_path / "threads", tokenizer=tokenizer, chunk_chars=20_000)
    encoders: list[prepare._Encoders] = []
    real_encoders = prepare._Encoders
    monkeypatch.setattr(prepare, "PROCESS_POOL_MIN_BYTES", 0)
    monkeypatch.setattr(prepare, "_usable_cores", lambda: 2)
    monkeypatch.setattr(prepare, "_Encoders", lambda *args: encoders.append(real_encoders(*args)) or encoders[-1])
    in_processes = prepare_dataset([str(poems_dir)], tmp_path / "processes", tokenizer=tokenizer, chunk_chars=20_000)
    assert encoders and encoders[0].in_processes
    for split in ("train", "val"):
        assert (in_processes.out_dir / f"{split}.bin").read_bytes() == (threaded.out_dir / f"{split}.bin").read_bytes()


def test_workers_are_forked_only_from_a_single_python_thread_without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prepare.sys, "platform", "linux")
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.delitem(sys.modules, "tokenizers", raising=False)
    monkeypatch.setattr(prepare.threading, "active_count", lambda: 1)
    assert prepare._worker_start_method() == "fork"
    monkeypatch.setitem(sys.modules, "tokenizers", object())  # its Rust threads, after training a BPE
    assert prepare._worker_start_method() == "spawn"
    monkeypatch.delitem(sys.modules, "tokenizers")
    monkeypatch.setattr(prepare.threading, "active_count", lambda: 2)  # e.g. a progress bar's refresh thread
    assert prepare._worker_start_method() == "spawn"
    monkeypatch.setattr(prepare.threading, "active_count", lambda: 1)
    monkeypatch.setitem(sys.modules, "torch", object())
    assert prepare._worker_start_method() == "spawn"
    monkeypatch.delitem(sys.modules, "torch")
    monkeypatch.setattr(prepare.sys, "platform", "darwin")
    assert prepare._worker_start_method() == "spawn"


def test_ctrl_c_with_worker_processes_leaves_nothing_behind(poems_dir: Path, tmp_path: Path, worker_processes: None) -> None:
    out_dir = tmp_path / "new"

    def interrupt(done: int, total: int) -> None:
        if done > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_dataset([str(poems_dir)], out_dir, progress=interrupt, chunk_chars=2000)
    assert not out_dir.exists()


def test_second_run_on_unchanged_sources_is_a_no_op(prepared_poems: PrepareResult, poems_dir: Path) -> None:
    before = {name: (prepared_poems.out_dir / name).stat().st_mtime_ns for name in _files_in(prepared_poems.out_dir)}
    again = prepare_dataset([str(poems_dir)], prepared_poems.out_dir)
    assert again.skipped
    assert (again.train_tokens, again.val_tokens) == (prepared_poems.train_tokens, prepared_poems.val_tokens)
    assert {name: (prepared_poems.out_dir / name).stat().st_mtime_ns for name in _files_in(again.out_dir)} == before


def test_changed_source_or_setting_prepares_again(tmp_path: Path) -> None:
    source = tmp_path / "story.txt"
    source.write_text("Once upon a time.\n" * 50)
    out_dir = tmp_path / "out"
    assert not prepare_dataset([str(source)], out_dir).skipped
    assert prepare_dataset([str(source)], out_dir).skipped
    assert not prepare_dataset([str(source)], out_dir, val_fraction=0.2).skipped
    assert not prepare_dataset([str(source)], out_dir, val_fraction=0.2, force=True).skipped
    source.write_text("Once upon another time.\n" * 50)
    assert not prepare_dataset([str(source)], out_dir, val_fraction=0.2).skipped


def test_interrupted_write_leaves_nothing_behind(poems_dir: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "new"
    seen_while_writing: list[str] = []

    def interrupt(done: int, total: int) -> None:
        if done > 0:
            seen_while_writing.extend(_files_in(out_dir))
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_dataset([str(poems_dir)], out_dir, progress=interrupt)
    assert len([name for name in seen_while_writing if name.endswith(".tmp")]) == 2
    assert not out_dir.exists()


def test_interrupted_rerun_keeps_the_previous_dataset(poems_dir: Path, tmp_path: Path) -> None:
    first = prepare_dataset([str(poems_dir)], tmp_path / "out", tokenizer="char")
    before = {name: (first.out_dir / name).read_bytes() for name in _files_in(first.out_dir)}

    def fail(done: int, total: int) -> None:
        if done > 0:
            raise RuntimeError("disk pulled out")

    with pytest.raises(RuntimeError):
        prepare_dataset([str(poems_dir)], first.out_dir, force=True, progress=fail)
    assert {name: (first.out_dir / name).read_bytes() for name in _files_in(first.out_dir)} == before


def test_char_dataset_decodes_to_documents_joined_by_a_blank_line(poems_dir: Path, tmp_path: Path) -> None:
    result = prepare_dataset([str(poems_dir)], tmp_path / "char", tokenizer="char")
    texts = _source_texts(poems_dir)
    tokenizer = CharTokenizer(result.meta["tokenizer"]["chars"])
    assert tokenizer.chars == "".join(sorted(set("".join(texts.values())) | {"\n"}))
    train = tokenizer.decode(np.fromfile(result.out_dir / "train.bin", dtype=np.uint16))
    assert train == "\n\n".join(text for name, text in texts.items() if name not in result.meta["val_documents"])


def test_a_single_document_is_split_at_its_tail(tmp_path: Path) -> None:
    lines = [f"line {number}: the quick brown fox" for number in range(2000)]
    source = tmp_path / "one.txt"
    source.write_text("\n".join(lines) + "\n")
    result = prepare_dataset([str(source)], tmp_path / "out", tokenizer="char", val_fraction=0.1)
    tokenizer = CharTokenizer(result.meta["tokenizer"]["chars"])
    train = tokenizer.decode(np.fromfile(result.out_dir / "train.bin", dtype=np.uint16))
    val = tokenizer.decode(np.fromfile(result.out_dir / "val.bin", dtype=np.uint16))
    assert result.meta["split"] == "tail"
    assert train + val == source.read_text()
    assert train.endswith("\n") and 0.08 < len(val) / (len(train) + len(val)) < 0.12


def test_split_plan_takes_whole_documents_from_the_end_when_they_fit() -> None:
    assert plan_split([100] * 10, 0.1) == SplitPlan(frozenset({9}))
    assert plan_split([85, 54, 109, 488, 53], 0.1) == SplitPlan(frozenset({1, 4}))


def test_split_plan_cuts_the_tail_when_documents_are_too_big() -> None:
    assert plan_split([1000], 0.1) == SplitPlan(frozenset(), cut_document=0, cut_offset=900)
    assert plan_split([500, 500], 0.1) == SplitPlan(frozenset(), cut_document=1, cut_offset=400)


def test_builtin_pydoc_is_the_python_help_texts(tmp_path: Path) -> None:
    from pydoc_data.topics import topics

    result = prepare_dataset(["builtin:pydoc"], tmp_path / "pydoc", tokenizer="char")
    assert result.meta["documents"] == len(topics)
    assert [source["path"] for source in result.meta["sources"]] == ["builtin:pydoc"]
    assert "python" in result.meta["sources"][0]
    assert result.meta["split"] == "documents"
    tokenizer = CharTokenizer(result.meta["tokenizer"]["chars"])
    val = tokenizer.decode(np.fromfile(result.out_dir / "val.bin", dtype=np.uint16))
    assert topics[result.meta["val_documents"][0].split("/", 1)[1]] in val


def test_a_vocabulary_over_65536_ids_is_stored_as_uint32(tmp_path: Path) -> None:
    source = tmp_path / "many.txt"
    source.write_text("".join(chr(0x10000 + offset) for offset in range(70_000)), encoding="utf-8")
    result = prepare_dataset([str(source)], tmp_path / "out", tokenizer="char")
    assert result.meta["dtype"] == "uint32"
    dataset = open_dataset(result.out_dir)
    assert dataset.tokenizer.vocab_size == 70_001
    assert dataset.num_tokens("train") + dataset.num_tokens("val") == 70_000


def test_replace_mode_goes_on_past_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    source = tmp_path / "latin1.txt"
    source.write_bytes("café au lait\n".encode("latin-1") * 20)
    with pytest.raises(UserError, match=r"latin1.txt is not UTF-8 at byte offset 3"):
        prepare_dataset([str(source)], tmp_path / "strict")
    assert not (tmp_path / "strict").exists()
    result = prepare_dataset([str(source)], tmp_path / "replace", encoding_errors="replace")
    assert result.train_tokens > 0


def test_folders_are_searched_recursively_with_the_glob(tmp_path: Path) -> None:
    (tmp_path / "corpus" / "deep").mkdir(parents=True)
    (tmp_path / "corpus" / "deep" / "a.md").write_text("markdown text\n" * 30)
    (tmp_path / "corpus" / "b.txt").write_text("plain text\n" * 30)
    result = prepare_dataset([str(tmp_path / "corpus")], tmp_path / "out", glob="*.md")
    assert [Path(source["path"]).name for source in result.meta["sources"]] == ["a.md"]


def test_a_missing_source_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="missing.txt does not exist"):
        prepare_dataset([str(tmp_path / "missing.txt")], tmp_path / "out")


def test_a_folder_without_text_files_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("not a .txt")
    with pytest.raises(UserError, match=r"no text files matching '\*.txt'"):
        prepare_dataset([str(tmp_path)], tmp_path / "out")


def test_an_empty_corpus_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(UserError, match="corpus is empty"):
        prepare_dataset([str(tmp_path / "empty.txt")], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_output_that_cannot_be_written_is_a_user_error(tmp_path: Path) -> None:
    source = tmp_path / "a.txt"
    source.write_text("some text\n" * 10)
    with pytest.raises(UserError, match="choose another --out"):
        prepare_dataset([str(source)], source / "out")


def test_a_tiny_document_still_gives_validation_a_whole_line(tmp_path: Path) -> None:
    source = tmp_path / "tiny.txt"
    source.write_text("one\ntwo\nthree\n")
    result = prepare_dataset([str(source)], tmp_path / "out", tokenizer="char", val_fraction=0.2)
    tokenizer = CharTokenizer(result.meta["tokenizer"]["chars"])
    decoded = [tokenizer.decode(np.fromfile(result.out_dir / f"{split}.bin", dtype=np.uint16)) for split in ("train", "val")]
    assert decoded == ["one\ntwo\n", "three\n"]


def test_files_inside_the_output_folder_are_not_read_as_sources(tmp_path: Path) -> None:
    (tmp_path / "story.txt").write_text("a story\n" * 100)
    out_dir = tmp_path / "bins"
    first = prepare_dataset([str(tmp_path)], out_dir, glob="*", tokenizer="char")
    again = prepare_dataset([str(tmp_path)], out_dir, glob="*", tokenizer="char")
    assert [Path(source["path"]).name for source in first.meta["sources"]] == ["story.txt"]
    assert again.skipped


def test_defaults_come_from_the_config_schema() -> None:
    import inspect

    from hellogpt.config.schema import DataConfig

    defaults = inspect.signature(prepare_dataset).parameters
    assert defaults["val_fraction"].default == DataConfig.model_fields["val_fraction"].default
    assert defaults["tokenizer"].default == DataConfig.model_fields["tokenizer"].default


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name file descriptors")
def test_every_file_and_the_folder_are_fsynced_before_they_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    source = tmp_path / "a.txt"
    source.write_text("some text\n" * 50)
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    out_dir = prepare_dataset([str(source)], tmp_path / "out", tokenizer="char").out_dir
    synced_names = [Path(path).name for path in synced]
    for name in ("train.bin", "val.bin", "meta.json"):
        assert any(synced_name.startswith(f".{name}.") for synced_name in synced_names), synced_names
    assert str(out_dir) in synced  # the folder, so that the renames last


def test_worker_processes_started_early_are_stopped_when_prepare_fails_before_encoding(
    poems_dir: Path, tmp_path: Path, worker_processes: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(out_dir: Path) -> None:
        raise UserError(f"no space left on the device holding {out_dir}")

    monkeypatch.setattr(prepare, "_DatasetWriter", full_disk)
    with pytest.raises(UserError, match="no space left"):
        prepare_dataset([str(poems_dir)], tmp_path / "out")
    assert multiprocessing.active_children() == []
