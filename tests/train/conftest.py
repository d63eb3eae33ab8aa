"""Tiny char datasets and configs so that training tests run in a second or two."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hellogpt.config.layers import ResolvedConfig, resolve_config

TINY_SHAKESPEARE = Path(__file__).resolve().parents[1] / "fixtures" / "tinyshakespeare.txt"
TINY_TEXT_CHARS = 60_000


def write_char_dataset(folder: Path, text: str, val_fraction: float = 0.1) -> Path:
    """A dataset folder as `hellogpt prepare --tokenizer char` writes it: meta.json, train.bin, val.bin."""
    chars = "".join(sorted(set(text)))
    index = {char: position for position, char in enumerate(chars)}
    ids = np.array([index[char] for char in text], dtype=np.uint16)
    split = int(len(ids) * (1 - val_fraction))
    folder.mkdir(parents=True, exist_ok=True)
    ids[:split].tofile(folder / "train.bin")
    ids[split:].tofile(folder / "val.bin")
    meta = {"tokenizer": {"kind": "char", "chars": chars}, "vocab_size": len(chars), "dtype": "uint16"}
    (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return folder


def shakespeare_text(n_chars: int = TINY_TEXT_CHARS) -> str:
    """The first `n_chars` characters of tiny Shakespeare (the fixture holds about 100k)."""
    return TINY_SHAKESPEARE.read_text(encoding="utf-8")[:n_chars]


@pytest.fixture
def char_dataset(tmp_path: Path) -> Path:
    return write_char_dataset(tmp_path / "data" / "tiny", shakespeare_text())


TINY_SETTINGS = [
    "model.n_layer=2",
    "model.n_head=2",
    "model.n_embd=32",
    "model.block_size=32",
    "train.batch_size=4",
    "train.gradient_accumulation_steps=2",
    "train.max_iters=8",
    "train.eval_interval=4",
    "train.eval_iters=2",
    "train.log_interval=1",
    "optim.learning_rate=1e-3",
    "optim.warmup_iters=2",
    "optim.lr_decay_iters=8",
    "optim.min_lr=1e-4",
    "system.device=cpu",
    "system.dtype=float32",
    "system.compile=false",
    "system.peak_flops=1e12",
    "sample.max_new_tokens=16",
]


def tiny_config(*overrides: str) -> ResolvedConfig:
    """A 2-layer, 32-wide char model trained for 8 steps, fp32 on the CPU."""
    return resolve_config(None, [], [*TINY_SETTINGS, *overrides])


def events_of(kind: type, events: list[Any]) -> list[Any]:
    return [event for event in events if isinstance(event, kind)]

