"""Where `prepare` reads text: .txt files, folders of them, and the built-in corpora (`builtin:NAME`).

Documents are read as streams of text chunks cut at whitespace boundaries, so a 1 GB corpus is
tokenised in bounded memory and in parallel, with exactly the ids the whole text would get.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, Optional

from hellogpt.errors import UserError

BUILTIN_PREFIX = "builtin:"
BUILTIN_PYDOC = "builtin:pydoc"
# Conversations about Python made from the same help texts (hellogpt/data/pydoc_chat.py), as OpenAI JSONL.
BUILTIN_PYDOC_CHAT = "builtin:pydoc-chat"
# The public-domain texts of the seed workflow, shipped as package data (provenance in each SOURCES.md).
CORPORA_DIR = Path(__file__).parent / "corpora"
READ_BLOCK_BYTES = 1 << 20
# GPT-2's pre-tokeniser never joins a non-space character with the whitespace after it, so a text
# cut where a whitespace run starts encodes to the same ids as the whole text. Line ends first.
_LINE_BOUNDARY = re.compile(r"(?<=\S)(?=\r?\n)")
_WHITESPACE_BOUNDARY = re.compile(r"(?<=\S)(?=\s)")
# Text with no whitespace boundary for this many characters is cut anyway (bounded memory; the ids
# at that one seam may then differ from the whole text's).
FORCED_CUT_CHARS = 4 * 1024 * 1024
# What joins two documents in a character-level dataset (so it is in every char vocabulary).
CHAR_DOCUMENT_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class Document:
    """One text of the corpus: a file, or one help topic of builtin:pydoc; `source` groups them in meta.json
    (a file's own path, or the name of the built-in corpus it belongs to)."""

    name: str
    source: str
    size: int
    path: Optional[Path] = None
    content: Optional[bytes] = None

    def open(self) -> BinaryIO:
        if self.content is not None:
            return io.BytesIO(self.content)
        assert self.path is not None
        return self.path.open("rb")


@dataclass(frozen=True)
class TextChunk:
    """A piece of a document's text and how many raw bytes of the document it came from."""

    text: str
    raw_bytes: int


def collect_documents(sources: list[str], glob: str = "*.txt") -> list[Document]:
    """Every document the sources name, in a stable order (files sorted within a folder), each once."""
    if not sources:
        raise UserError(f"no SOURCE given: name a .txt file, a folder of them, or one of {_builtin_names()}")
    documents: list[Document] = []
    seen: set[str] = set()
    for source in sources:
        for document in _documents_of(source, glob):
            key = str(document.path.resolve()) if document.path is not None else document.name
            if key not in seen:
                seen.add(key)
                documents.append(document)
    return documents


def _documents_of(source: str, glob: str) -> list[Document]:
    if source.startswith(BUILTIN_PREFIX):
        if source not in BUILTIN_CORPORA:
            raise UserError(f"unknown built-in corpus {source!r}: choose one of {_builtin_names()}")
        return BUILTIN_CORPORA[source]()
    path = Path(source).expanduser()
    if not path.exists():
        raise UserError(
            f"source {source} does not exist: give a .txt file, a folder of text files, or one of {_builtin_names()}"
        )
    if path.is_file():
        return [_file_document(path)]
    files = sorted(candidate for candidate in path.rglob(glob) if candidate.is_file())
    if not files:
        raise UserError(f"no text files matching {glob!r} under {source}: add some or choose others with --glob")
    return [_file_document(file) for file in files]


def _file_document(path: Path) -> Document:
    try:
        size = path.stat().st_size
    except OSError as error:
        raise UserError(f"cannot read {path} ({error.strerror}): check its permissions") from None
    return Document(name=str(path), source=str(path.resolve()), size=size, path=path)


def pydoc_documents() -> list[Document]:
    """The English help texts shipped with CPython (`help('topics')`), one document per topic."""
    from pydoc_data.topics import topics

    return [
        Document(name=f"{BUILTIN_PYDOC}/{topic}", source=BUILTIN_PYDOC, size=len(data), content=data)
        for topic, data in ((topic, topics[topic].encode("utf-8")) for topic in sorted(topics))
    ]


def pydoc_chat_documents() -> list[Document]:
    """builtin:pydoc-chat as one JSONL document, made from this Python's help texts."""
    from hellogpt.data.pydoc_chat import pydoc_chat_jsonl

    data = pydoc_chat_jsonl()
    return [Document(name=f"{BUILTIN_PYDOC_CHAT}/conversations.jsonl", source=BUILTIN_PYDOC_CHAT, size=len(data), content=data)]


def shipped_documents(name: str) -> list[Document]:
    """The .txt files of a corpus shipped in hellogpt/data/corpora/NAME, sorted as a folder source is."""
    source = f"{BUILTIN_PREFIX}{name}"
    files = sorted((CORPORA_DIR / name).glob("*.txt"))
    return [Document(name=f"{source}/{file.name}", source=source, size=file.stat().st_size, path=file) for file in files]


# Every built-in corpus: its name on the command line and how to list its documents (chat sets hold one .jsonl).
BUILTIN_CORPORA: dict[str, Callable[[], list[Document]]] = {
    BUILTIN_PYDOC: pydoc_documents,
    BUILTIN_PYDOC_CHAT: pydoc_chat_documents,
    "builtin:edgar_poe": partial(shipped_documents, "edgar_poe"),
    "builtin:poems": partial(shipped_documents, "poems"),
}


def _builtin_names() -> str:
    return ", ".join(BUILTIN_CORPORA)


def hash_sources(documents: list[Document]) -> list[dict[str, object]]:
    """Each source (a file, or a built-in corpus) with its size and sha256, in document order."""
    sizes: dict[str, int] = {}
    hashers: dict[str, Any] = {}
    for document in documents:
        hasher = hashers.setdefault(document.source, hashlib.sha256())
        sizes[document.source] = sizes.get(document.source, 0) + document.size
        with _open_for_reading(document) as stream:
            while block := stream.read(READ_BLOCK_BYTES):
                hasher.update(block)
    return [
        {"path": source, "size": sizes[source], "sha256": hasher.hexdigest(), **builtin_source_note(source)}
        for source, hasher in hashers.items()
    ]


def builtin_source_note(source: str) -> dict[str, str]:
    """Extra meta for a built-in source: which Python's help texts these are."""
    return {"python": sys.version.split()[0]} if source in (BUILTIN_PYDOC, BUILTIN_PYDOC_CHAT) else {}


def default_dataset_name(sources: list[str]) -> str:
    """The folder name under data/ that `prepare` writes to when --out is not given."""
    names = []
    for source in sources:
        if source.startswith(BUILTIN_PREFIX):
            names.append(source[len(BUILTIN_PREFIX) :])
        else:
            path = Path(source).expanduser()
            names.append(path.stem if path.is_file() else path.resolve().name)
    return "-".join(name for name in names if name) or "dataset"


def read_text_chunks(
    document: Document,
    *,
    encoding_errors: str,
    chunk_chars: int,
) -> Iterator[TextChunk]:
    """Decode a document as UTF-8 in chunks of about `chunk_chars` characters cut at whitespace boundaries.

    A byte that is not UTF-8 raises a UserError naming the file and byte offset (unless errors='replace').
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors=encoding_errors)
    pending = ""
    pending_raw = 0  # raw bytes behind `pending`, so that the chunks' raw sizes add up to the file size
    bytes_read = 0
    with _open_for_reading(document) as stream:
        while True:
            block = stream.read(READ_BLOCK_BYTES)
            at_end = not block
            bom = len(codecs.BOM_UTF8) if bytes_read == 0 and block.startswith(codecs.BOM_UTF8) else 0
            pending += _decode_block(decoder, block[bom:], at_end, bytes_read + bom, document)
            bytes_read += len(block)
            pending_raw += len(block)
            start = 0
            while (cut := find_chunk_boundary(pending, start, chunk_chars, at_end)) is not None:
                piece = pending[start:cut]
                last = at_end and cut == len(pending)
                raw = pending_raw if last else min(len(piece.encode("utf-8")), pending_raw)
                pending_raw -= raw
                start = cut
                yield TextChunk(piece, raw)
            pending = pending[start:]
            if at_end:
                return


def _open_for_reading(document: Document) -> BinaryIO:
    try:
        return document.open()
    except OSError as error:
        raise UserError(f"cannot read {document.name} ({error.strerror}): check it still exists and is readable") from None


def _decode_block(decoder: codecs.IncrementalDecoder, block: bytes, at_end: bool, offset: int, document: Document) -> str:
    buffered = len(decoder.getstate()[0])
    try:
        return decoder.decode(block, final=at_end)
    except UnicodeDecodeError as error:
        position = offset - buffered + error.start
        raise UserError(
            f"{document.name} is not UTF-8 at byte offset {position} ({error.reason}): "
            "convert it to UTF-8, or pass --encoding-errors replace to go on"
        ) from None


def find_chunk_boundary(text: str, start: int, chunk_chars: int, at_end: bool) -> Optional[int]:
    """Where the chunk of `text` from `start` (at least `chunk_chars` long) ends; None = wait for more text."""
    if start >= len(text):
        return None
    if len(text) - start < chunk_chars:
        return len(text) if at_end else None
    for boundary in (_LINE_BOUNDARY, _WHITESPACE_BOUNDARY):
        match = boundary.search(text, start + chunk_chars)
        if match is not None:
            return match.start()
    if at_end:
        return len(text)
    return start + chunk_chars if len(text) - start >= max(chunk_chars, FORCED_CUT_CHARS) else None


def corpus_characters(documents: list[Document], encoding_errors: str, chunk_chars: int) -> str:
    """Every character of the corpus, sorted, plus the newline that joins documents (the char vocabulary)."""
    import numpy as np

    code_points = np.frombuffer(CHAR_DOCUMENT_SEPARATOR.encode("utf-32-le"), dtype=np.uint32)
    for document in documents:
        for chunk in read_text_chunks(document, encoding_errors=encoding_errors, chunk_chars=chunk_chars):
            chunk_points = np.unique(np.frombuffer(chunk.text.encode("utf-32-le"), dtype=np.uint32))
            code_points = np.union1d(code_points, chunk_points)
    return code_points.astype("<u4").tobytes().decode("utf-32-le")
