"""Conversations -> token bins, loss masks and row starts per split (meta.json "format": "chat").

Every conversation is checked before anything is written, rendered through the chat template (ids and a mask of
trained targets) and cut into rows of at most block_size + 1 ids at turn starts where possible; training reads one
row per batch line, so no conversation ever attends into another. Train and validation get whole conversations.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from hellogpt.data.chat_template import TURN_START, chat_tokenizer, render_training
from hellogpt.data.chats import Conversation, read_conversations
from hellogpt.data.loader import CHAT_FORMAT, SPLITS, mask_file_name, rows_file_name
from hellogpt.config.tokenizer_names import bpe_size
from hellogpt.data.dataset_files import (
    TOKENIZER_FILE,
    DatasetWriter,
    PrepareResult,
    ProgressCallback,
    dtype_for_vocab,
    meta_header,
    up_to_date_meta,
)
from hellogpt.data.sources import (
    BUILTIN_PYDOC,
    BUILTIN_PYDOC_CHAT,
    Document,
    corpus_characters,
    hash_sources,
    pydoc_documents,
)
from hellogpt.data.tokenizer import CharTokenizer, Tokenizer, gpt2_tokenizer
from hellogpt.errors import UserError

# Seeds the choice of validation conversations: the same file always splits the same way.
SPLIT_SEED = 0
ROLE_TEXT = "systemuserassistant\n"
# A built-in chat set made from a built-in corpus takes that corpus's character vocabulary, so that a char
# model trained on the corpus (the quick start's) can be tuned on it.
CHAR_VOCABULARY_OF = {BUILTIN_PYDOC_CHAT: BUILTIN_PYDOC}
ROW_DTYPE = np.dtype(np.uint64)
MASK_DTYPE = np.dtype(np.uint8)


@dataclass
class _Counts:
    conversations: dict[str, int]
    turns: int = 0
    trained_tokens: int = 0
    cut_conversations: int = 0
    dropped_rows: int = 0


def prepare_chats(
    documents: list[Document],
    out_dir: Path,
    tokenizer: str,
    val_fraction: float,
    block_size: Optional[int],
    force: bool = False,
    progress: Optional[ProgressCallback] = None,
    model_tokenizer: Optional[Tokenizer] = None,
) -> PrepareResult:
    """Check, render and write the conversations of `documents` (JSONL) into `out_dir`; a re-run on unchanged
    sources and settings does nothing unless `force`. `model_tokenizer` (a model's own, for `tune --data X.jsonl`)
    replaces the one `tokenizer` names; its description is then one of the settings a re-run must match."""
    started = time.perf_counter()
    if block_size is None:
        from hellogpt.config.schema import ModelConfig  # the schema holds the default (pydantic: imported late)

        block_size = ModelConfig().block_size
    if block_size < 1:
        raise UserError(f"--block-size {block_size}: give the model's context length, e.g. 1024")
    total_bytes = sum(document.size for document in documents)
    source_entries = hash_sources(documents)
    settings: dict[str, Any] = {"tokenizer_name": tokenizer, "val_fraction": val_fraction, "block_size": block_size}
    if model_tokenizer is not None:
        model_tokenizer = chat_tokenizer(model_tokenizer)
        settings["tokenizer"] = model_tokenizer.description()
    if not force:
        existing = up_to_date_meta(out_dir, source_entries, settings)
        if existing is not None and _masks_complete(out_dir, existing):
            return PrepareResult(out_dir, True, existing["train_tokens"], existing["val_tokens"], total_bytes, 0.0, existing)
    conversations = [conversation for document in documents for conversation in read_conversations(document)]
    if len(conversations) < 2:
        raise UserError(
            f"{' '.join(document.name for document in documents)} holds {len(conversations)} conversation(s): "
            "training and validation need at least one each; add conversations"
        )
    val = _validation_indices(len(conversations), val_fraction)
    training = [conversation for index, conversation in enumerate(conversations) if index not in val]
    chosen = model_tokenizer or chat_tokenizer(_base_tokenizer(tokenizer, documents, conversations, training))
    writer = _ChatWriter(out_dir)
    try:
        if bpe_size(tokenizer) is not None:
            writer.add_file(TOKENIZER_FILE, chosen.to_hf_json().encode("utf-8"))
        counts = _write_rows(conversations, val, chosen, block_size, writer, progress, total_bytes)
        tokens = writer.token_counts()
        if tokens["train"] == 0 or tokens["val"] == 0:
            raise UserError(f"no trained tokens in the {'train' if tokens['train'] == 0 else 'val'} split: check weights")
        meta = {
            **meta_header(CHAT_FORMAT, settings, chosen),
            "split": "conversations",
            "conversations": counts.conversations,
            "turns": counts.turns,
            "trained_tokens": counts.trained_tokens,
            "cut_conversations": counts.cut_conversations,
            "dropped_rows": counts.dropped_rows,
            "rows": writer.row_counts(),
            "documents": len(documents),
            "source_bytes": total_bytes,
            "sources": source_entries,
            "train_tokens": tokens["train"],
            "val_tokens": tokens["val"],
        }
        writer.commit(meta)
    except BaseException:
        writer.discard()
        raise
    return PrepareResult(out_dir, False, tokens["train"], tokens["val"], total_bytes, time.perf_counter() - started, meta)


def prepare_chats_for_model(
    source: Path, out_dir: Path, model_tokenizer: dict[str, Any], block_size: int, val_fraction: float
) -> PrepareResult:
    """Conversations (a .jsonl file or a folder of them) prepared for tuning one model: its tokenizer plus the chat
    markers, rows of its `block_size`; nothing is done when `out_dir` already holds exactly this. A folder holding
    a dataset of other sources is refused, never replaced: it is something the user made."""
    from hellogpt.data.chats import CHAT_GLOB
    from hellogpt.data.loader import META_FILE
    from hellogpt.data.sources import collect_documents
    from hellogpt.data.tokenizer import ordinary_description, tokenizer_from_description

    documents = collect_documents([str(source)], CHAT_GLOB)
    _refuse_other_dataset(out_dir / META_FILE, hash_sources(documents), source)
    base = tokenizer_from_description(model_tokenizer)
    kind = model_tokenizer.get("kind")
    ordinary = tokenizer_from_description(ordinary_description(model_tokenizer)) if kind == "bpe" else base
    name = f"bpe:{ordinary.vocab_size}" if kind == "bpe" else str(kind)
    return prepare_chats(documents, out_dir, name, val_fraction, block_size, model_tokenizer=base)


def _refuse_other_dataset(meta_path: Path, sources: list[dict[str, Any]], source: Path) -> None:
    """UserError when `meta_path` describes a dataset prepared from other files than `sources` (edited versions of
    the same files are prepared again)."""
    import json

    if not meta_path.is_file():
        return
    try:
        theirs = [entry.get("path") for entry in json.loads(meta_path.read_text(encoding="utf-8")).get("sources", [])]
    except (OSError, ValueError, AttributeError):
        theirs = None
    if theirs != [entry["path"] for entry in sources]:
        raise UserError(
            f"{meta_path.parent} holds another dataset, and tuning on {source} would prepare it there: "
            f"move that folder, or prepare {source} yourself (hellogpt prepare {source} --out DIR) and pass --data DIR"
        )


def _base_tokenizer(
    name: str, documents: list[Document], conversations: list[Conversation], training: list[Conversation]
) -> Tokenizer:
    """The tokenizer before the chat markers: GPT-2's, a BPE trained on the training conversations' text (roles
    included, as rendered), or characters (of the conversations, or of the corpus a built-in chat set was made from)."""
    size = bpe_size(name)
    if size is not None:
        from hellogpt.data.bpe import train_bpe

        return train_bpe((f"{m['role']}\n{m['content']}\n" for c in training for m in c.messages), size)
    if name == "gpt2":
        return gpt2_tokenizer()
    corpora = {CHAR_VOCABULARY_OF.get(document.source) for document in documents}
    if corpora == {BUILTIN_PYDOC}:
        return CharTokenizer(corpus_characters(pydoc_documents(), "strict", 1 << 16))
    texts = [ROLE_TEXT, *(message["content"] for conversation in conversations for message in conversation.messages)]
    return CharTokenizer.from_texts(texts)


def _validation_indices(count: int, val_fraction: float) -> frozenset[int]:
    """A fixed random share of the conversations (at least one), never all of them."""
    wanted = min(count - 1, max(1, round(count * val_fraction)))
    return frozenset(int(index) for index in np.random.default_rng(SPLIT_SEED).permutation(count)[:wanted])


def _write_rows(
    conversations: list[Conversation],
    val: frozenset[int],
    tokenizer: Tokenizer,
    block_size: int,
    writer: _ChatWriter,
    progress: Optional[ProgressCallback],
    total_bytes: int,
) -> _Counts:
    from hellogpt.data.chats import turn_rows

    turn_start_id = tokenizer.special_tokens[TURN_START]
    dtype = dtype_for_vocab(tokenizer.vocab_size)
    counts = _Counts(conversations={split: 0 for split in SPLITS})
    done_bytes = 0
    if progress is not None:
        progress(0, total_bytes)
    for index, conversation in enumerate(conversations):
        split = "val" if index in val else "train"
        try:
            ids, mask = render_training(conversation.messages, tokenizer)
        except UserError as error:
            raise UserError(f"{conversation.origin}: {error}") from None
        rows = turn_rows(ids, mask, turn_start_id, block_size + 1)
        counts.conversations[split] += 1
        counts.turns += conversation.turns
        counts.cut_conversations += len(ids) > block_size + 1
        counts.dropped_rows += not rows
        for start, end in rows:
            writer.write_row(split, np.asarray(ids[start:end], dtype=dtype), np.asarray(mask[start:end], dtype=MASK_DTYPE))
            counts.trained_tokens += int(sum(mask[start + 1 : end]))
        done_bytes += conversation.raw_bytes
        if progress is not None:
            progress(min(done_bytes, total_bytes), total_bytes)
    return counts


class _ChatWriter(DatasetWriter):
    """The dataset writer with a mask bin and a row-start bin beside each split's ids."""

    def __init__(self, out_dir: Path) -> None:
        super().__init__(out_dir)
        self._row_starts: dict[str, list[int]] = {split: [] for split in SPLITS}
        for split in SPLITS:
            self._open_temp_file(mask_file_name(split))
            self._open_temp_file(rows_file_name(split))

    def write_row(self, split: str, ids: np.ndarray, mask: np.ndarray) -> None:
        self._row_starts[split].append(self.token_counts()[split])
        self.write(split, ids)
        self._write_named(mask_file_name(split), mask)

    def row_counts(self) -> dict[str, int]:
        return {split: len(starts) for split, starts in self._row_starts.items()}

    def commit(self, meta: dict[str, Any]) -> None:
        for split in SPLITS:
            self._write_named(rows_file_name(split), np.asarray(self._row_starts[split], dtype=ROW_DTYPE))
        super().commit(meta)

    def _write_named(self, name: str, values: np.ndarray) -> None:
        with self._reported_as(self.out_dir / name):
            self._files[name].write(memoryview(np.ascontiguousarray(values)).cast("B"))


def _masks_complete(out_dir: Path, meta: dict[str, Any]) -> bool:
    """The mask and row bins of an up-to-date chat folder are there, with the sizes meta.json implies."""
    if meta.get("format") != CHAT_FORMAT:
        return False
    for split in SPLITS:
        mask_path, rows_path = out_dir / mask_file_name(split), out_dir / rows_file_name(split)
        rows = (meta.get("rows") or {}).get(split, -1)
        if not mask_path.is_file() or mask_path.stat().st_size != meta.get(f"{split}_tokens", -1):
            return False
        if not rows_path.is_file() or rows_path.stat().st_size != rows * ROW_DTYPE.itemsize:
            return False
    return True
