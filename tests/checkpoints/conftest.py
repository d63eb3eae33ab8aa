"""A tiny checkpoint as training writes it, for the tests of the format, training's resume state and `info`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from hellogpt.checkpoints.format import Checkpoint
from hellogpt.config.schema import RunConfig
from hellogpt.model.gpt import GPT, GPTConfig
from hellogpt.train.rng_state import capture_rng_state, generator_state

TINY = GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=11, dropout=0.0, bias=False, arch="gpt2")
CHARS = "abcdefghij\n"


def tiny_payload(model: GPT | None = None) -> dict[str, Any]:
    """A payload as the training loop writes it, after one real optimizer step (so Adam has state)."""
    torch.manual_seed(0)
    model = model or GPT(TINY)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    idx = torch.randint(0, TINY.vocab_size, (2, TINY.block_size))
    model(idx, idx)[1].backward()
    optimizer.step()
    return {
        "model_args": TINY.to_dict(),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": None,
        "step": 1,
        "train_loss": 2.5,
        "val_loss": 2.6,
        "best_val_loss": 2.6,
        "config": RunConfig().model_dump(mode="json"),
        "tokenizer": {"kind": "char", "chars": CHARS},
        "rng": capture_rng_state(),
        "sampler": {"kind": "numpy", "world_size": 1, "states": [generator_state(np.random.default_rng(7))]},
        "origin": {"kind": "checkpoint", "path": "checkpoints/base.pt", "step": 100},
        "run_name": "tiny-run",
    }


def tiny_checkpoint(model: GPT | None = None) -> Checkpoint:
    return Checkpoint.from_payload({**tiny_payload(model), "format_version": 1}, Path("tiny.pt"))
