"""`hellogpt eval`'s core: the same deterministic windows for every model, bits per byte as defined."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from hellogpt.data.loader import open_dataset
from hellogpt.errors import UserError
from hellogpt.evaluate import EVAL_BATCH_SIZE, evaluate_model, window_starts
from hellogpt.model.gpt import GPT, GPTConfig
from tests.train.conftest import write_char_dataset

# Two-byte characters make bytes and tokens differ, which is what bits per byte is about.
TEXT = "héllo wörld\n" * 50
WINDOW = 8


def uniform_model(vocab_size: int) -> GPT:
    """A model whose logits are all zero (the final LayerNorm's gain is zero): every token costs ln(vocab)."""
    model = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=WINDOW, vocab_size=vocab_size, bias=False, dropout=0.0, arch="gpt2"))
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
    return model


@pytest.fixture
def dataset(tmp_path: Path):
    return open_dataset(write_char_dataset(tmp_path / "chars", TEXT))


def test_windows_are_consecutive_from_the_start_and_capped(dataset) -> None:
    val_tokens = dataset.num_tokens("val")
    assert window_starts(dataset, "val", WINDOW, None).tolist() == list(range(0, (val_tokens - 1) // WINDOW * WINDOW, WINDOW))
    assert window_starts(dataset, "val", WINDOW, 2).tolist() == [0, WINDOW]


def test_bits_per_byte_by_hand_on_a_uniform_model(dataset) -> None:
    vocab = dataset.tokenizer.vocab_size
    starts = window_starts(dataset, "val", WINDOW, None)
    result = evaluate_model(
        uniform_model(vocab), "uniform", dataset.tokenizer, dataset, "val", starts, WINDOW, torch.device("cpu"), torch.float32
    )
    scored = len(starts) * WINDOW
    val_text = dataset.tokenizer.decode(np.asarray(dataset.tokens("val")).tolist())
    scored_bytes = len(val_text[1 : 1 + scored].encode("utf-8"))
    assert result.tokens == scored and result.bytes == scored_bytes > scored
    assert result.loss == pytest.approx(math.log(vocab), abs=1e-6)
    assert result.perplexity == pytest.approx(vocab, rel=1e-5)
    assert result.bits_per_byte == pytest.approx(scored * math.log(vocab) / math.log(2) / scored_bytes, rel=1e-6)


def test_the_batch_size_changes_nothing_but_speed(dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    vocab_size = dataset.tokenizer.vocab_size
    model = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=WINDOW, vocab_size=vocab_size, dropout=0.0, bias=True, arch="gpt2"))
    starts = window_starts(dataset, "val", WINDOW, None)
    scores = []
    for batch_size in (EVAL_BATCH_SIZE, 1):
        monkeypatch.setattr("hellogpt.evaluate.EVAL_BATCH_SIZE", batch_size)
        scores.append(evaluate_model(model, "", dataset.tokenizer, dataset, "val", starts, WINDOW, torch.device("cpu"), torch.float32))
    assert scores[0].loss == pytest.approx(scores[1].loss, rel=1e-6)


def test_a_split_shorter_than_one_window_is_one_line(dataset) -> None:
    with pytest.raises(UserError, match="fewer than one window of 10001"):
        window_starts(dataset, "val", 10_000, None)
