"""Short real runs learn: val loss ends clearly below the unigram entropy of the data (what a model
that ignores context would reach)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hellogpt.checkpoints.format import load_checkpoint
from hellogpt.cli import app

# "Clearly below": at least this far under the unigram entropy, in nats per token.
MARGIN_NATS = 0.3


def unigram_entropy(dataset: Path) -> float:
    ids = np.fromfile(dataset / "train.bin", dtype=np.uint16)
    probabilities = np.bincount(ids).astype(np.float64)
    probabilities = probabilities[probabilities > 0] / probabilities.sum()
    return float(-(probabilities * np.log(probabilities)).sum())


def train(*arguments: str) -> None:
    result = CliRunner().invoke(app, ["train", "--plain", *arguments])
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_quickstart_prepares_its_corpus_and_learns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    train(
        "--profile", "quickstart",
        # 30 steps of 16 rows: Qwen3's block with Muon ends near 2.3 nats (about 1 under the unigram entropy).
        "--set", "train.max_iters=30",
        "--set", "train.batch_size=16",
        "--set", "optim.warmup_iters=5",
        "--set", "optim.lr_decay_iters=30",
        "--set", "train.eval_interval=30",
        "--set", "train.eval_iters=5",
        "--set", "sample.max_new_tokens=20",
    )
    entropy = unigram_entropy(tmp_path / "data" / "quickstart")
    checkpoint = load_checkpoint(tmp_path / "checkpoints" / "quickstart.pt")
    assert checkpoint.step == 30
    assert checkpoint.val_loss < entropy - MARGIN_NATS


@pytest.mark.slow
def test_a_short_poems_run_learns_beyond_word_frequencies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the profile prepares builtin:poems into data/poems itself
    settings = [
        "model.n_layer=2", "model.n_head=2", "model.n_embd=32", "model.block_size=32",
        "train.batch_size=16", "train.gradient_accumulation_steps=1", "train.max_iters=100",
        "train.eval_interval=100", "train.eval_iters=5", "optim.learning_rate=1e-2", "optim.min_lr=1e-3",
        "optim.muon_learning_rate=0.02",  # the profile's Muon rate is a fine-tune's
        "optim.warmup_iters=10", "optim.lr_decay_iters=100", "system.peak_flops=1e12", "sample.max_new_tokens=20",
    ]
    train("--profile", "poems", *[argument for setting in settings for argument in ("--set", setting)])
    checkpoint = load_checkpoint(tmp_path / "checkpoints" / "poems_from_poe.pt")
    assert checkpoint.val_loss < unigram_entropy(tmp_path / "data" / "poems") - MARGIN_NATS
