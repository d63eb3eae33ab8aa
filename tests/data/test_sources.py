"""Reading sources: chunks cut where GPT-2 ids cannot change, exact byte offsets, default names, built-ins."""

from __future__ import annotations

from pathlib import Path

import pytest

import hellogpt.data.sources as sources
from hellogpt.data.sources import (
    BUILTIN_CORPORA,
    Document,
    collect_documents,
    default_dataset_name,
    hash_sources,
    read_text_chunks,
)
from hellogpt.data.tokenizer import gpt2_tokenizer
from hellogpt.errors import UserError

TRICKY = (
    "Line one.\r\nLine  two,\u00a0with nbsp\n\n\n   indented 'quote's\tand\ttabs\n"
    "東京 🚀 123 4567 !!! ???\n \n\u3000ideographic space\u2028line separator\n\n"
) * 20


def _document(data: bytes) -> Document:
    return Document(name="memory.txt", source="memory.txt", size=len(data), content=data)


@pytest.mark.parametrize("chunk_chars", [1, 7, 64, 10_000])
def test_chunks_encode_to_the_ids_of_the_whole_text(chunk_chars: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "READ_BLOCK_BYTES", 100)
    chunks = list(read_text_chunks(_document(TRICKY.encode()), encoding_errors="strict", chunk_chars=chunk_chars))
    tokenizer = gpt2_tokenizer()
    assert "".join(chunk.text for chunk in chunks) == TRICKY
    assert [token for chunk in chunks for token in tokenizer.encode(chunk.text)] == tokenizer.encode(TRICKY)
    assert sum(chunk.raw_bytes for chunk in chunks) == len(TRICKY.encode())


def test_a_byte_order_mark_is_dropped_but_counted() -> None:
    data = b"\xef\xbb\xbfhello\n"
    chunks = list(read_text_chunks(_document(data), encoding_errors="strict", chunk_chars=100))
    assert [chunk.text for chunk in chunks] == ["hello\n"]
    assert sum(chunk.raw_bytes for chunk in chunks) == len(data)


def test_the_offset_of_a_bad_byte_is_exact_across_read_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "READ_BLOCK_BYTES", 7)
    data = "héllo wörld ".encode() * 10 + b"\xff" + b"tail"
    with pytest.raises(UserError, match=rf"memory.txt is not UTF-8 at byte offset {len(data) - 5} "):
        list(read_text_chunks(_document(data), encoding_errors="strict", chunk_chars=16))


def test_default_names_come_from_the_sources(tmp_path: Path) -> None:
    (tmp_path / "my.books").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    assert default_dataset_name(["builtin:pydoc"]) == "pydoc"
    assert default_dataset_name(["builtin:poems"]) == "poems"
    assert default_dataset_name(["builtin:edgar_poe"]) == "edgar_poe"
    assert default_dataset_name([str(tmp_path / "notes.txt")]) == "notes"
    assert default_dataset_name([str(tmp_path / "my.books")]) == "my.books"


def test_text_without_whitespace_is_still_cut_to_bound_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "FORCED_CUT_CHARS", 50)
    monkeypatch.setattr(sources, "READ_BLOCK_BYTES", 20)
    chunks = list(read_text_chunks(_document(b"x" * 200), encoding_errors="strict", chunk_chars=10))
    assert "".join(chunk.text for chunk in chunks) == "x" * 200
    assert max(len(chunk.text) for chunk in chunks) <= 50


@pytest.mark.parametrize("name, files", [("edgar_poe", 5), ("poems", 5)])
def test_a_shipped_corpus_is_its_text_files_sorted_under_the_builtin_name(name: str, files: int) -> None:
    documents = collect_documents([f"builtin:{name}"])
    assert len(documents) == files
    assert [document.name for document in documents] == sorted(document.name for document in documents)
    for document in documents:
        assert document.source == f"builtin:{name}"
        assert document.path is not None and document.path.suffix == ".txt"
        assert document.name == f"builtin:{name}/{document.path.name}"
        assert document.size == document.path.stat().st_size > 0


def test_a_builtin_and_its_folder_are_the_same_files_in_the_same_order(poems_dir: Path) -> None:
    builtin = collect_documents(["builtin:poems"])
    folder = collect_documents([str(poems_dir)])
    assert [document.path.resolve() for document in builtin] == [document.path.resolve() for document in folder]


def test_meta_groups_a_builtin_corpus_under_its_name() -> None:
    documents = collect_documents(["builtin:poems"])
    [entry] = hash_sources(documents)
    assert entry["path"] == "builtin:poems"
    assert entry["size"] == sum(document.size for document in documents)


def test_an_unknown_builtin_names_every_builtin() -> None:
    with pytest.raises(UserError, match="unknown built-in corpus 'builtin:nope'") as raised:
        collect_documents(["builtin:nope"])
    assert set(BUILTIN_CORPORA) == {"builtin:pydoc", "builtin:pydoc-chat", "builtin:edgar_poe", "builtin:poems"}
    assert all(name in str(raised.value) for name in BUILTIN_CORPORA)
