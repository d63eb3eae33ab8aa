"""Sources -> train.bin / val.bin / meta.json: tokenise a corpus once so training only memory-maps ids.

Documents stream through in chunks cut at whitespace, are encoded in batches on a thread pool
(tiktoken releases the GIL while it encodes) and appended to temporary bins, which are fsynced and
renamed only when everything is written.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from hellogpt.config.defaults import DEFAULT_TOKENIZER, DEFAULT_VAL_FRACTION
from hellogpt.data import workers
from hellogpt.data.chats import are_chat_sources, chat_glob
from hellogpt.data.loader import META_FILE
from hellogpt.data.dataset_files import (
    TOKENIZER_FILE,
    DatasetWriter as _DatasetWriter,  # by this name here: tests replace it to fail a write
    PrepareResult,
    ProgressCallback,
    dtype_for_vocab,
    meta_header,
    up_to_date_meta,
)
from hellogpt.data.sources import (
    CHAR_DOCUMENT_SEPARATOR,
    Document,
    TextChunk,
    collect_documents,
    corpus_characters,
    default_dataset_name,
    hash_sources,
    read_text_chunks,
)
from hellogpt.config.tokenizer_names import bpe_size, check_tokenizer_name
from hellogpt.data.tokenizer import GPT2_DESCRIPTION, CharTokenizer, Tokenizer, gpt2_tokenizer
from hellogpt.errors import UserError
from hellogpt.gpt2 import GPT2_VOCAB_SIZE

FORMAT_NAME = "hellogpt-tokens"
# The schema is the one home of a setting's default; `prepare` and its command take theirs from it.
ENCODING_ERROR_MODES = ("strict", "replace")
DEFAULT_CHUNK_CHARS = 64 * 1024
# Characters handed to the encoding threads at once: many chunks to keep every core busy, while the
# text and ids of one batch stay near a hundred megabytes whatever the corpus size.
BATCH_CHARS = 16 * 1024 * 1024
# From this much text on, chunks are encoded in worker processes: threads of one process contend on some CPUs
# (a 2-core AVX2 EPYC encoded only 1.07x faster on two threads, 1.85x on two processes), while a worker
# process costs a Python start and its own BPE tables (about half a second) that only a large corpus repays.
PROCESS_POOL_MIN_BYTES = 32 * 1024 * 1024
# Loaded, these make forked workers unsafe or noisy: torch's thread pools, and the Rust thread pool of Hugging Face
# `tokenizers` after training a BPE (it warns on every fork).
FORK_UNSAFE_MODULES = frozenset({"torch", "tokenizers"})
# Chunks sent to a worker process at once: fewer, larger messages between the processes.
CHUNKS_PER_MESSAGE = 8
# Whole documents make the validation split when some of them add up to roughly the wanted share.
WHOLE_DOCUMENT_TOLERANCE = 0.5
@dataclass(frozen=True)
class SplitPlan:
    """Which text goes to validation: whole documents, or the tail from a byte offset of one document."""

    val_documents: frozenset[int]
    cut_document: Optional[int] = None
    cut_offset: int = 0

    @property
    def mode(self) -> str:
        return "documents" if self.cut_document is None else "tail"


def prepare_dataset(
    sources: list[str],
    out_dir: Path,
    tokenizer: str = DEFAULT_TOKENIZER,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    glob: str = "*.txt",
    force: bool = False,
    encoding_errors: str = "strict",
    progress: Optional[ProgressCallback] = None,
    chunk_chars: int = DEFAULT_CHUNK_CHARS,
    block_size: Optional[int] = None,
) -> PrepareResult:
    """Tokenise `sources` into `out_dir`; a re-run on unchanged sources and settings does nothing unless `force`.

    Conversations (.jsonl, builtin:pydoc-chat) go to `chat_prepare`, cut into rows of `block_size` + 1 ids
    (model.block_size's default when None)."""
    _check_settings(tokenizer, val_fraction, encoding_errors)
    if are_chat_sources(sources, glob):
        from hellogpt.data.chat_prepare import prepare_chats

        documents = _outside(Path(out_dir), collect_documents(sources, chat_glob(glob)))
        return prepare_chats(documents, Path(out_dir), tokenizer, val_fraction, block_size, force, progress)
    started = time.perf_counter()
    out_dir = Path(out_dir)
    documents = _outside(out_dir, collect_documents(sources, glob))
    total_bytes = sum(document.size for document in documents)
    if total_bytes == 0:
        raise UserError(f"the corpus is empty: no text in {' '.join(sources)} ({len(documents)} empty file(s)); add text")
    source_entries = hash_sources(documents)
    settings = {"tokenizer_name": tokenizer, "val_fraction": val_fraction, "encoding_errors": encoding_errors}
    if not force:
        existing = up_to_date_meta(out_dir, source_entries, settings)
        if existing is not None:
            return PrepareResult(
                out_dir, True, existing["train_tokens"], existing["val_tokens"], total_bytes, 0.0, existing
            )
    with _early_gpt2_workers(tokenizer, total_bytes) as processes:
        plan = plan_split([document.size for document in documents], val_fraction)
        chosen = _build_tokenizer(tokenizer, documents, plan, encoding_errors, chunk_chars)
        meta = {
            **meta_header(FORMAT_NAME, settings, chosen),
            "split": plan.mode,
            "val_documents": [documents[index].name for index in sorted(plan.val_documents)],
            "documents": len(documents),
            "source_bytes": total_bytes,
            "sources": source_entries,
        }
        writer = _DatasetWriter(out_dir)
        try:
            if bpe_size(tokenizer) is not None:
                writer.add_file(TOKENIZER_FILE, chosen.to_hf_json().encode("utf-8"))
            counts = _encode_corpus(documents, plan, chosen, writer, encoding_errors, chunk_chars, progress, processes)
            meta.update(train_tokens=counts["train"], val_tokens=counts["val"])
            if counts["train"] == 0:
                raise UserError(f"the corpus is empty: {' '.join(sources)} decode to no text; add text")
            stale_tokenizer_file = _stale_tokenizer_file(out_dir, tokenizer)
            writer.commit(meta)
            if stale_tokenizer_file is not None:
                stale_tokenizer_file.unlink(missing_ok=True)
        except BaseException:
            writer.discard()
            raise
        return PrepareResult(
            out_dir, False, counts["train"], counts["val"], total_bytes, time.perf_counter() - started, meta
        )


@contextmanager
def _early_gpt2_workers(tokenizer: str, total_bytes: int) -> Iterator[Optional[ProcessPoolExecutor]]:
    """GPT-2's worker processes need nothing from the corpus: started here, they load their tables while this
    process builds its own. Closed on the way out (the encoding normally closes them first)."""
    processes = None
    if tokenizer == GPT2_DESCRIPTION["kind"]:
        processes = start_worker_processes(GPT2_DESCRIPTION, dtype_for_vocab(GPT2_VOCAB_SIZE), total_bytes)
    try:
        yield processes
    finally:
        if processes is not None:
            processes.shutdown(wait=True, cancel_futures=True)


def _outside(out_dir: Path, documents: list[Document]) -> list[Document]:
    """Leave out files under the output folder, so `prepare corpus/ --out corpus/bins --glob '*'` never reads its bins."""
    out_root = out_dir.resolve()
    kept = [doc for doc in documents if doc.path is None or out_root not in doc.path.resolve().parents]
    if not kept:
        raise UserError(f"every source file is inside the output folder {out_dir}: choose another --out")
    return kept


def _check_settings(tokenizer: str, val_fraction: float, encoding_errors: str) -> None:
    try:
        check_tokenizer_name(tokenizer)
    except ValueError as error:
        raise UserError(f"--tokenizer: {error}") from None
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"--val-fraction {val_fraction} is out of range: give a share between 0 and 1, e.g. 0.1")
    if encoding_errors not in ENCODING_ERROR_MODES:
        raise UserError(f"--encoding-errors {encoding_errors!r}: use one of {', '.join(ENCODING_ERROR_MODES)}")


def _build_tokenizer(
    name: str, documents: list[Document], plan: SplitPlan, encoding_errors: str, chunk_chars: int
) -> Tokenizer:
    """The tokenizer `name` for this corpus: GPT-2's, the corpus's characters, or a BPE trained on the training
    split alone (validation text must stay unseen, or its loss would flatter the model)."""
    size = bpe_size(name)
    if size is not None:
        from hellogpt.data.bpe import train_bpe

        pieces = _pieces(documents, plan, encoding_errors, chunk_chars)
        return train_bpe((piece.text for piece in pieces if piece.split == "train"), size)
    if name == "char":
        return CharTokenizer(corpus_characters(documents, encoding_errors, chunk_chars))
    return gpt2_tokenizer()


def _stale_tokenizer_file(out_dir: Path, tokenizer: str) -> Optional[Path]:
    """The tokenizer.json an earlier `bpe:N` preparation left in `out_dir`, when this one writes none: left there, it
    would describe bins it no longer matches. Only a file that the folder's meta.json says is ours."""
    path = out_dir / TOKENIZER_FILE
    if bpe_size(tokenizer) is not None or not path.is_file():
        return None
    try:
        previous = json.loads((out_dir / META_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    previous_tokenizer = previous.get("tokenizer") if isinstance(previous, dict) else None
    return path if isinstance(previous_tokenizer, dict) and previous_tokenizer.get("kind") == "bpe" else None


def plan_split(sizes: list[int], val_fraction: float) -> SplitPlan:
    """Whole documents from the end for validation when some add up to about the wanted share, else the tail.

    Either way no text is in both splits, and training keeps at least one document's worth of text.
    """
    total = sum(sizes)
    target = total * val_fraction
    chosen: set[int] = set()
    chosen_bytes = 0
    for index in reversed(range(len(sizes))):
        if chosen_bytes >= target:
            break
        if chosen_bytes + sizes[index] <= target * (1 + WHOLE_DOCUMENT_TOLERANCE):
            chosen.add(index)
            chosen_bytes += sizes[index]
    keeps_training_text = chosen_bytes < total
    if chosen_bytes >= target * (1 - WHOLE_DOCUMENT_TOLERANCE) and chosen and keeps_training_text:
        return SplitPlan(frozenset(chosen))
    cut = total - max(1, round(target))
    start = 0
    for index, size in enumerate(sizes):
        if start + size > cut:
            return SplitPlan(frozenset(range(index + 1, len(sizes))), cut_document=index, cut_offset=cut - start)
        start += size
    return SplitPlan(frozenset(), cut_document=len(sizes) - 1, cut_offset=sizes[-1])


@dataclass(frozen=True)
class _Piece:
    """A chunk of text bound for one split; `opens_document` = a separator goes before it."""

    split: str
    text: str
    opens_document: bool
    raw_bytes: int


def _pieces(documents: list[Document], plan: SplitPlan, encoding_errors: str, chunk_chars: int) -> Iterator[_Piece]:
    """The corpus as pieces in order, each labelled with its split, cutting one document when the plan says so."""
    for index, document in enumerate(documents):
        split = "val" if index in plan.val_documents else "train"
        chunks = read_text_chunks(document, encoding_errors=encoding_errors, chunk_chars=chunk_chars)
        if index != plan.cut_document:
            for number, chunk in enumerate(chunks):
                yield _Piece(split, chunk.text, number == 0, chunk.raw_bytes)
            continue
        yield from _cut_document_pieces(chunks, plan.cut_offset)


def _cut_document_pieces(chunks: Iterator[TextChunk], cut_offset: int) -> Iterator[_Piece]:
    """The document that holds the train/val seam: its head to train and its tail to val, cut at a line end."""
    position = 0
    opens = {"train": True, "val": True}
    for chunk in chunks:
        if position + chunk.raw_bytes <= cut_offset or position >= cut_offset:
            split = "train" if position < cut_offset else "val"
            yield _Piece(split, chunk.text, opens[split], chunk.raw_bytes)
            opens[split] = False
        else:
            seam = _seam(chunk.text, cut_offset - position)
            head, tail = chunk.text[:seam], chunk.text[seam:]
            head_bytes = min(len(head.encode("utf-8")), chunk.raw_bytes)
            if head:
                yield _Piece("train", head, opens["train"], head_bytes)
                opens["train"] = False
            if tail:
                yield _Piece("val", tail, opens["val"], chunk.raw_bytes - head_bytes)
                opens["val"] = False
        position += chunk.raw_bytes


def _seam(text: str, head_bytes: int) -> int:
    """Where validation starts in `text`: after the first line end from `head_bytes` on, or the last one
    before it when that would leave validation empty, or exactly there when the text has no line end."""
    head_chars = len(text.encode("utf-8")[:head_bytes].decode("utf-8", errors="ignore"))
    after = text.find("\n", head_chars) + 1
    if 0 < after < len(text):
        return after
    before = text.rfind("\n", 0, head_chars) + 1
    return before if before > 0 else head_chars


def _batches(pieces: Iterator[_Piece], batch_chars: int) -> Iterator[list[_Piece]]:
    batch: list[_Piece] = []
    batch_size = 0
    for piece in pieces:
        batch.append(piece)
        batch_size += len(piece.text)
        if batch_size >= batch_chars:
            yield batch
            batch, batch_size = [], 0
    if batch:
        yield batch


def _encode_corpus(
    documents: list[Document],
    plan: SplitPlan,
    tokenizer: Tokenizer,
    writer: _DatasetWriter,
    encoding_errors: str,
    chunk_chars: int,
    progress: Optional[ProgressCallback],
    processes: Optional[ProcessPoolExecutor] = None,
) -> dict[str, int]:
    """Encode every piece, write it to its split's bin with separators between documents; return token counts."""
    dtype = dtype_for_vocab(tokenizer.vocab_size)
    separator = _separator_ids(tokenizer, dtype)
    total_bytes = sum(document.size for document in documents)
    done_bytes = 0
    if progress is not None:
        progress(0, total_bytes)
    started = {"train": False, "val": False}
    encoders = _Encoders(tokenizer, dtype, total_bytes, processes)
    try:
        for batch in _batches(_pieces(documents, plan, encoding_errors, chunk_chars), BATCH_CHARS):
            for piece, ids in zip(batch, encoders.map([piece.text for piece in batch])):
                if piece.opens_document and started[piece.split]:
                    writer.write(piece.split, separator)
                writer.write(piece.split, ids)
                started[piece.split] = started[piece.split] or len(ids) > 0
                done_bytes += piece.raw_bytes
            if progress is not None:
                progress(min(done_bytes, total_bytes), total_bytes)
    finally:
        encoders.close()
    if progress is not None and done_bytes < total_bytes:
        progress(total_bytes, total_bytes)
    return writer.token_counts()


def _separator_ids(tokenizer: Tokenizer, dtype: np.dtype) -> np.ndarray:
    """End-of-text between GPT-2 documents; a blank line between char-level ones."""
    if tokenizer.eot_id is not None:
        return np.asarray([tokenizer.eot_id], dtype=dtype)
    return np.asarray(tokenizer.encode(CHAR_DOCUMENT_SEPARATOR), dtype=dtype)


class _Encoders:
    """Encodes batches of chunks on every core, ids in chunk order: threads for small corpora, worker
    processes from PROCESS_POOL_MIN_BYTES on (the same ids either way)."""

    def __init__(
        self, tokenizer: Tokenizer, dtype: np.dtype, total_bytes: int, processes: Optional[ProcessPoolExecutor] = None
    ) -> None:
        """`processes`: workers already started for this tokenizer (`start_worker_processes`), to use and close."""
        self._encode = workers.array_encoder(tokenizer, dtype)
        self._pool: Executor
        if processes is None:
            processes = start_worker_processes(tokenizer.description(), dtype, total_bytes)
        self.in_processes = processes is not None
        self._pool = processes if processes is not None else ThreadPoolExecutor(_usable_cores())

    def map(self, texts: list[str]) -> Iterator[np.ndarray]:
        if self.in_processes:
            return self._pool.map(workers.encode, texts, chunksize=CHUNKS_PER_MESSAGE)
        return self._pool.map(self._encode, texts)

    def close(self) -> None:
        """Stop the workers; on Ctrl-C or an error, chunks not yet started are dropped, not waited for."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def start_worker_processes(
    tokenizer_description: dict[str, Any], dtype: np.dtype, total_bytes: int
) -> Optional[ProcessPoolExecutor]:
    """Worker processes to encode a corpus of `total_bytes` (None: threads will do), started now: each is handed an
    empty text at once, so that all of them spawn and build their BPE tables while this process goes on."""
    cores = _usable_cores()
    if cores < 2 or total_bytes < PROCESS_POOL_MIN_BYTES:
        return None
    method = _worker_start_method()
    if method == "spawn" and not _main_module_importable():
        return None
    pool = ProcessPoolExecutor(
        cores, mp_context=multiprocessing.get_context(method),
        initializer=workers.start_encoder, initargs=(tokenizer_description, dtype.str),
    )
    for _ in range(cores):
        pool.submit(workers.encode, "")
    return pool


def _worker_start_method() -> str:
    """fork where it is safe, else spawn. A forked worker is ready in ~0.05 s; a spawned one starts an interpreter
    and imports numpy and the tokenizer (~0.25 s of CPU each, a tenth of a 100 MB run on two cores). Forking is
    safe when no other Python thread can hold a lock the child inherits, and torch (whose thread pools a child
    could not use) is not loaded: `hellogpt prepare` itself, whose progress bar starts after the workers. Other
    threads of this process are native library pools that handle fork (OpenBLAS's, under numpy)."""
    if sys.platform == "linux" and threading.active_count() == 1 and not FORK_UNSAFE_MODULES & sys.modules.keys():
        return "fork"
    return "spawn"


def _main_module_importable() -> bool:
    """Spawned workers re-import the main module (guarded by `if __name__ == "__main__"` in the `hellogpt`
    script, `python -m`, pytest); code read from stdin or `-c` has no file to import: threads then."""
    main = sys.modules.get("__main__")
    if getattr(getattr(main, "__spec__", None), "name", None):
        return True
    main_file = getattr(main, "__file__", None)
    return main_file is not None and Path(main_file).is_file()


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_out_dir(sources: list[str]) -> Path:
    """`data/<source name>` (builtin:pydoc -> data/pydoc), where `prepare` writes without --out."""
    return Path("data") / default_dataset_name(sources)
