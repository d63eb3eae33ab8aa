"""A prepared dataset's folder as files: its format version, meta.json's opening, whether it is up to date, and
the writer that stages the bins and renames them into place (meta.json last).

What plain-text (`prepare.py`) and chat (`chat_prepare.py`) datasets share, below both so that neither imports
the other for it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Optional

import numpy as np

from hellogpt import __version__, files
from hellogpt.data.loader import META_FILE, split_file_name
from hellogpt.data.tokenizer import Tokenizer
from hellogpt.errors import UserError

FORMAT_VERSION = 1
# What a failed write of the dataset suggests besides freeing space.
WRITE_ELSEWHERE = "choose another --out"
# A trained BPE's tokenizer.json, written beside the bins (meta.json carries the same text in its description).
TOKENIZER_FILE = "tokenizer.json"

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class PrepareResult:
    """What `prepare_dataset` did: where, whether it was already up to date, and how many tokens."""

    out_dir: Path
    skipped: bool
    train_tokens: int
    val_tokens: int
    source_bytes: int = 0
    seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds every id (uint16 for GPT-2's 50257)."""
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


def meta_header(format_name: str, settings: dict[str, Any], tokenizer: Tokenizer) -> dict[str, Any]:
    """What every meta.json (plain text or chats) opens with: its format, who wrote it when, the settings it was
    prepared with (compared on the next run), and the tokenizer its bins hold ids of."""
    return {
        "format": format_name,
        "format_version": FORMAT_VERSION,
        "hellogpt_version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **settings,
        "tokenizer": tokenizer.description(),
        "vocab_size": tokenizer.vocab_size,
        "eot_id": tokenizer.eot_id,
        "dtype": dtype_for_vocab(tokenizer.vocab_size).name,
    }


class DatasetWriter:
    """Appends ids to temporary bins in the output folder; `commit` fsyncs and renames them, `discard` removes them.

    A failed write (full disk, read-only, permission) removes the temporary files and is raised as one line
    naming the file; whatever the folder held before is left as it was.
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.created_dir = not out_dir.exists()
        self._files: dict[str, BinaryIO] = {}
        self._temp_paths: dict[str, Path] = {}
        self._counts = {"train": 0, "val": 0}
        if out_dir.exists() and not out_dir.is_dir():
            raise UserError(f"--out {out_dir} is a file, not a folder: choose another --out")
        with self._reported_as(out_dir):
            out_dir.mkdir(parents=True, exist_ok=True)
        for split in ("train", "val"):
            self._open_temp_file(split_file_name(split))

    def write(self, split: str, ids: np.ndarray) -> None:
        """Append `ids` as raw bytes (through `write`, not `tofile`, so any file object will do)."""
        name = split_file_name(split)
        with self._reported_as(self.out_dir / name):
            self._files[name].write(memoryview(np.ascontiguousarray(ids)).cast("B"))
        self._counts[split] += len(ids)

    def token_counts(self) -> dict[str, int]:
        return dict(self._counts)

    def add_file(self, name: str, data: bytes) -> None:
        """One more file for the folder (the trained tokenizer.json), renamed into place with the bins."""
        self._open_temp_file(name)
        with self._reported_as(self.out_dir / name):
            self._files[name].write(data)

    def commit(self, meta: dict[str, Any]) -> None:
        """Fsync every file, then rename them into place, meta.json last: a folder with a meta.json is complete."""
        self._open_temp_file(META_FILE)
        with self._reported_as(self.out_dir / META_FILE):
            self._files[META_FILE].write(json.dumps(meta, indent=2, ensure_ascii=False).encode("utf-8") + b"\n")
        for name, handle in self._files.items():
            with self._reported_as(self.out_dir / name):
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()
        bins = [name for name in self._temp_paths if name != META_FILE]
        with self._reported_as(self.out_dir / META_FILE):
            (self.out_dir / META_FILE).unlink(missing_ok=True)
        for name in [*bins, META_FILE]:
            with self._reported_as(self.out_dir / name):
                os.replace(self._temp_paths[name], self.out_dir / name)
        self._temp_paths.clear()
        files.fsync_directory(self.out_dir)

    def discard(self) -> None:
        """Remove every temporary file (and the output folder when this run created it and it is empty)."""
        for handle in self._files.values():
            with suppress(OSError):
                handle.close()  # closing flushes, which fails again on a full disk
        for path in self._temp_paths.values():
            path.unlink(missing_ok=True)
        self._temp_paths.clear()
        if self.created_dir and self.out_dir.is_dir() and not any(self.out_dir.iterdir()):
            self.out_dir.rmdir()

    def _open_temp_file(self, final_name: str) -> None:
        """A new hidden file beside the final one, created with the user's umask."""
        path = files.temporary_path(self.out_dir / final_name)
        with self._reported_as(self.out_dir / final_name):
            self._files[final_name] = files.open_for_writing(path, "xb")
        self._temp_paths[final_name] = path

    @contextmanager
    def _reported_as(self, path: Path) -> Iterator[None]:
        """Turn a failed write into one line naming `path`, after removing the temporary files."""
        try:
            yield
        except OSError as error:
            self.discard()
            raise files.write_error(error, path, WRITE_ELSEWHERE) from None


def up_to_date_meta(
    out_dir: Path, source_entries: list[dict[str, Any]], settings: dict[str, Any]
) -> Optional[dict[str, Any]]:
    """The existing meta when `out_dir` already holds these sources prepared with these settings."""
    meta_path = out_dir / META_FILE
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        return None
    if meta.get("sources") != source_entries or any(meta.get(key) != value for key, value in settings.items()):
        return None
    if meta.get("dtype") not in ("uint16", "uint32"):
        return None
    itemsize = np.dtype(meta["dtype"]).itemsize
    for split in ("train", "val"):
        bin_path = out_dir / split_file_name(split)
        if not bin_path.is_file() or bin_path.stat().st_size != meta.get(f"{split}_tokens", -1) * itemsize:
            return None
    return meta
