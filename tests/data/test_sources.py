"""Reading sources: chunks cut where GPT-2 ids cannot change, exact byte offsets, default names."""

from __future__ import annotations

from pathlib import Path

import pytest

import hellogpt.data.sources as sources
from hellogpt.data.sources import Document, default_dataset_name, read_text_chunks
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
    assert default_dataset_name([str(tmp_path / "notes.txt")]) == "notes"
    assert default_dataset_name([str(tmp_path / "my.books")]) == "my.books"


def test_text_without_whitespace_is_still_cut_to_bound_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "FORCED_CUT_CHARS", 50)
    monkeypatch.setattr(sources, "READ_BLOCK_BYTES", 20)
    chunks = list(read_text_chunks(_document(b"x" * 200), encoding_errors="strict", chunk_chars=10))
    assert "".join(chunk.text for chunk in chunks) == "x" * 200
    assert max(len(chunk.text) for chunk in chunks) <= 50
