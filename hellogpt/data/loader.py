"""Memory-mapped token bins and random training windows cut from them.

Only the windows of a batch are read and converted, never the whole file, so a dataset larger
than RAM trains as well as a small one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from hellogpt.data.tokenizer import Tokenizer, gpt2_tokenizer, tokenizer_from_description
from hellogpt.errors import UserError

META_FILE = "meta.json"
SPLITS = ("train", "val")
# The old Hello-GPT tool wrote these names, uint16 GPT-2 ids and no meta.json.
LEGACY_SPLIT_FILES = {"train": "train.bin", "val": "validate.bin"}
SUPPORTED_DTYPES = ("uint16", "uint32")
MAX_SOURCES_SHOWN = 10
# meta.json's "format" of a conversation dataset (ids, a loss mask and row starts per split).
CHAT_FORMAT = "chat"
ROW_LENGTH_MULTIPLE = 64


def split_file_name(split: str) -> str:
    """The bin of a split in a folder written by `hellogpt prepare`."""
    return f"{split}.bin"


def mask_file_name(split: str) -> str:
    """A chat dataset's loss mask of a split: one uint8 per id, 1 where the id is a trained target."""
    return f"{split}.mask.bin"


def rows_file_name(split: str) -> str:
    """A chat dataset's row starts of a split (uint64): each row is one batch line, never mixed with another."""
    return f"{split}.rows.bin"


@dataclass
class TokenDataset:
    """A prepared dataset folder: its meta, its tokenizer and its memory-mapped splits."""

    path: Path
    meta: dict[str, Any]
    tokenizer: Tokenizer
    split_paths: dict[str, Path]
    dtype: np.dtype
    _memmaps: dict[str, np.memmap] = field(default_factory=dict, repr=False)
    _masks: dict[str, np.memmap] = field(default_factory=dict, repr=False)
    _rows: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    def num_tokens(self, split: str) -> int:
        """Tokens in `split`, from the file size (no reading)."""
        return self._split_path(split).stat().st_size // self.dtype.itemsize

    def tokens(self, split: str) -> np.ndarray:
        """The read-only memory map of a split (empty array for an empty split)."""
        if split not in self._memmaps:
            if self.num_tokens(split) == 0:
                return np.zeros(0, dtype=self.dtype)
            self._memmaps[split] = np.memmap(self._split_path(split), dtype=self.dtype, mode="r")
        return self._memmaps[split]

    @property
    def is_chat(self) -> bool:
        """Conversations with a loss mask (meta.json "format": "chat"), sampled a row per batch line."""
        return self.meta.get("format") == CHAT_FORMAT

    def sample_batch(
        self, split: str, batch_size: int, block_size: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Random windows: x is (batch_size, block_size) int64 ids, y the same windows shifted by one.

        A chat dataset gives random rows instead, padded (see `sample_rows`)."""
        if self.is_chat:
            return self.sample_rows(split, batch_size, block_size, rng)
        available = self.num_tokens(split)
        self._require_window(split, available, block_size)
        starts = rng.integers(0, available - block_size, size=batch_size)
        # Fancy indexing on the memmap reads only these windows; the file itself is never copied.
        windows = self.tokens(split)[starts[:, None] + np.arange(block_size + 1)].astype(np.int64)
        return windows[:, :-1], windows[:, 1:]

    def sample_rows(
        self, split: str, batch_size: int, block_size: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Random conversation rows, one per line: targets are -1 where the mask says untrained and on the padding,
        so no line attends into another conversation. Lines are as long as the longest row, rounded up to a multiple
        of ROW_LENGTH_MULTIPLE (few shapes for compiled models), at most block_size."""
        starts, ends = self._row_bounds(split)
        chosen = rng.integers(0, len(starts), size=batch_size)
        lengths = np.minimum(ends[chosen] - starts[chosen], block_size + 1)
        width = min(block_size, -(-(int(lengths.max()) - 1) // ROW_LENGTH_MULTIPLE) * ROW_LENGTH_MULTIPLE)
        inputs = np.zeros((batch_size, width), dtype=np.int64)
        targets = np.full((batch_size, width), -1, dtype=np.int64)
        tokens, mask = self.tokens(split), self._mask(split)
        for line, (row, length) in enumerate(zip(chosen, lengths)):
            start = int(starts[row])
            ids = tokens[start : start + length].astype(np.int64)
            trained = mask[start + 1 : start + length].astype(bool)
            inputs[line, : length - 1] = ids[:-1]
            targets[line, : length - 1] = np.where(trained, ids[1:], -1)
        return inputs, targets

    def _row_bounds(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        if split not in self._rows:
            starts = np.fromfile(self.path / rows_file_name(split), dtype=np.uint64).astype(np.int64)
            self._rows[split] = (starts, np.append(starts[1:], self.num_tokens(split)))
        return self._rows[split]

    def _mask(self, split: str) -> np.ndarray:
        if split not in self._masks:
            self._masks[split] = np.memmap(self.path / mask_file_name(split), dtype=np.uint8, mode="r")
        return self._masks[split]

    def require_windows(self, block_size: int) -> None:
        """Both splits hold a window of block_size + 1 tokens: checked before training, not at the first eval."""
        for split in SPLITS:
            if self.is_chat:
                self._require_rows(split)
            else:
                self._require_window(split, self.num_tokens(split), block_size)

    def _require_rows(self, split: str) -> None:
        if len(self._row_bounds(split)[0]) == 0:
            raise UserError(
                f"the {split} split of {self.path} holds no conversation: prepare it again with more conversations"
            )

    def _require_window(self, split: str, available: int, block_size: int) -> None:
        if available < block_size + 1:
            raise UserError(
                f"the {split} split of {self.path} has {available} tokens, fewer than block_size + 1 = "
                f"{block_size + 1}: lower model.block_size (e.g. --set model.block_size={max(available - 1, 1)}) "
                f"or give the {split} split more text (more sources or another --val-fraction in hellogpt prepare)"
            )

    def _split_path(self, split: str) -> Path:
        if split not in self.split_paths:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return self.split_paths[split]


def open_dataset(path: Path) -> TokenDataset:
    """Open a folder written by `hellogpt prepare`, or by the old Hello-GPT tool (read as GPT-2 BPE)."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"dataset folder {path} does not exist: create it with hellogpt prepare SOURCE --out {path}")
    if (path / META_FILE).is_file():
        return _open_prepared(path)
    if all((path / name).is_file() for name in LEGACY_SPLIT_FILES.values()):
        return _open_legacy(path)
    raise UserError(
        f"{path} is not a dataset: it has no {META_FILE} (nor the old train.bin + validate.bin); "
        f"create it with hellogpt prepare SOURCE --out {path}"
    )


def _open_prepared(path: Path) -> TokenDataset:
    meta = read_meta(path)
    try:
        dtype_name = meta["dtype"]
        tokenizer_desc = meta["tokenizer"]
    except KeyError as missing:
        raise UserError(f"{path / META_FILE} lacks the key {missing}; prepare the dataset again with --force") from None
    if dtype_name not in SUPPORTED_DTYPES:
        raise UserError(f"{path / META_FILE} names dtype {dtype_name!r}; expected one of {', '.join(SUPPORTED_DTYPES)}")
    split_paths = {split: path / split_file_name(split) for split in SPLITS}
    dtype = np.dtype(dtype_name)
    for split, split_path in split_paths.items():
        if not split_path.is_file():
            raise UserError(f"{split_path} is missing: prepare the dataset again with hellogpt prepare ... --force")
        _check_bin(split_path, dtype, meta.get(f"{split}_tokens"))
        if meta.get("format") == CHAT_FORMAT:
            _check_chat_bins(path, split, meta)
    tokenizer = tokenizer_from_description(tokenizer_desc)
    return TokenDataset(path, meta, tokenizer, split_paths, dtype)


def _open_legacy(path: Path) -> TokenDataset:
    tokenizer = gpt2_tokenizer()
    split_paths = {split: path / name for split, name in LEGACY_SPLIT_FILES.items()}
    for split_path in split_paths.values():
        _check_bin(split_path, np.dtype("uint16"), None)
    meta = {
        "format": "hello-gpt-legacy",
        "tokenizer": tokenizer.description(),
        "vocab_size": tokenizer.vocab_size,
        "dtype": "uint16",
    }
    return TokenDataset(path, meta, tokenizer, split_paths, np.dtype("uint16"))


def _check_chat_bins(path: Path, split: str, meta: dict[str, Any]) -> None:
    """A chat split's mask (one byte per id) and row starts are there and as long as meta.json says."""
    expected = ((mask_file_name(split), np.uint8, meta.get(f"{split}_tokens")),
                (rows_file_name(split), np.uint64, (meta.get("rows") or {}).get(split)))
    for name, dtype, count in expected:
        if not (path / name).is_file():
            raise UserError(f"{path / name} is missing: prepare the dataset again with hellogpt prepare ... --force")
        _check_bin(path / name, np.dtype(dtype), count)


def _check_bin(bin_path: Path, dtype: np.dtype, expected_tokens: Any) -> None:
    """Refuse a bin that is not whole tokens, or not the count meta.json recorded: cut short or from another run.

    Checked once when the dataset is opened, so training never meets it as a memory-map error mid-run.
    """
    size = bin_path.stat().st_size
    fix = f"prepare it again: hellogpt prepare SOURCE --out {bin_path.parent} --force"
    if size % dtype.itemsize:
        raise UserError(
            f"{bin_path} is {size:,} bytes, not a whole number of {dtype.name} tokens ({dtype.itemsize} bytes each): "
            f"it was cut short or damaged; {fix}"
        )
    tokens = size // dtype.itemsize
    # Folders written before meta.json recorded the counts (or by hand) have none to compare with.
    if isinstance(expected_tokens, int) and not isinstance(expected_tokens, bool) and tokens != expected_tokens:
        raise UserError(
            f"{bin_path} holds {tokens:,} tokens but {bin_path.parent / META_FILE} records {expected_tokens:,}: "
            f"the bin and its meta come from different runs or the bin was cut short; {fix}"
        )


def read_meta(path: Path) -> dict[str, Any]:
    """The meta.json of a dataset folder, or a UserError saying why it cannot be read."""
    meta_path = Path(path) / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"cannot read {meta_path} ({error}); prepare the dataset again with --force") from None
    if not isinstance(meta, dict):
        raise UserError(f"{meta_path} is not a JSON object; prepare the dataset again with --force")
    return meta


def describe_dataset(path: Path) -> dict[str, Any]:
    """What `hellogpt info DIR` shows: tokenizer, vocabulary, tokens per split, dtype, sources, version."""
    dataset = open_dataset(Path(path))
    meta = dataset.meta
    return {
        "path": str(dataset.path),
        "format": meta.get("format", "hellogpt"),
        "tokenizer": dataset.tokenizer.name,
        "vocab_size": dataset.tokenizer.vocab_size,
        "dtype": dataset.dtype.name,
        "train_tokens": dataset.num_tokens("train"),
        "val_tokens": dataset.num_tokens("val"),
        "validation": _describe_validation(meta),
        "documents": meta.get("documents"),
        "source_bytes": meta.get("source_bytes"),
        "sources": _summarise_sources(meta.get("sources", [])),
        "created_by": meta.get("hellogpt_version", "Hello-GPT (old tool)"),
        "created_at": meta.get("created_at"),
    }


def _summarise_sources(sources: list[Any], shown: int = MAX_SOURCES_SHOWN) -> list[str]:
    """'path (size)' for the first few sources, then how many more: a corpus may have thousands of files."""
    lines = [
        f"{source.get('path', '?')} ({source.get('size', 0) / 1e6:.2f} MB)" if isinstance(source, dict) else str(source)
        for source in sources[:shown]
    ]
    if len(sources) > shown:
        lines.append(f"... and {len(sources) - shown} more")
    return lines


def _describe_validation(meta: dict[str, Any]) -> Optional[str]:
    """How the validation split was taken, in words (None for the old tool's folders)."""
    if "split" not in meta:
        return None
    fraction = meta.get("val_fraction")
    if meta["split"] == "conversations":
        return f"{(meta.get('conversations') or {}).get('val', '?')} whole conversation(s), asked for {fraction} of them"
    if meta["split"] == "documents":
        return f"{len(meta.get('val_documents', []))} whole document(s), asked for {fraction} of the text"
    return f"the last {fraction} of the text"
