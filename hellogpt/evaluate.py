"""Loss, perplexity and bits per byte of models on a dataset split, every model on the same windows.

The windows are the split cut into consecutive, non-overlapping pieces of one length (the shortest context of
the models compared), from its start: deterministic, and each token is scored once. Bits per byte divides the
total loss in bits by the UTF-8 bytes the scored tokens decode to, so a character model and a BPE model, whose
losses per token mean different things, compare fairly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from hellogpt.data.loader import TokenDataset
from hellogpt.data.tokenizer import Tokenizer, reads_ids_of
from hellogpt.errors import UserError
from hellogpt.model.gpt import GPT, GPTConfig

# Windows per forward pass: speed only, never the result (every window is scored alone).
EVAL_BATCH_SIZE = 8


@dataclass(frozen=True)
class EvalTarget:
    """A model to evaluate, before its weights are read: its label, architecture and tokenizer."""

    label: str
    kind: str  # "checkpoint" or "huggingface"
    location: str
    architecture: GPTConfig
    tokenizer: dict[str, Any]


@dataclass(frozen=True)
class Evaluation:
    """One model's scores on the windows."""

    target: str
    split: str
    loss: float
    perplexity: float
    bits_per_byte: float
    tokens: int
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            f"{self.split}_loss": self.loss,
            "perplexity": self.perplexity,
            "bits_per_byte": self.bits_per_byte,
            "tokens": self.tokens,
            "bytes": self.bytes,
            "split": self.split,
        }


def checkpoint_target(spec: str) -> EvalTarget:
    """One of our checkpoints (a LoRA one too) as an eval target; a name with no such checkpoint may be a Hugging
    Face model."""
    from hellogpt.checkpoints.format import load_checkpoint
    from hellogpt.checkpoints.paths import resolve_checkpoint_path
    from hellogpt.model.hf import is_huggingface_source

    path = resolve_checkpoint_path(spec)
    if not path.is_file() and is_huggingface_source(spec):
        return huggingface_target(spec)
    checkpoint = load_checkpoint(path, map_weights=True)
    if checkpoint.tokenizer is None:
        raise UserError(f"{path} has no tokenizer description: it cannot be scored on a dataset; retrain it")
    return EvalTarget(str(path), "checkpoint", str(path), checkpoint.model_args, checkpoint.tokenizer)


def huggingface_target(spec: str) -> EvalTarget:
    from hellogpt.model.hf import pretrained_architecture, pretrained_tokenizer

    return EvalTarget(spec, "huggingface", spec, pretrained_architecture(spec), pretrained_tokenizer(spec)[0])


def check_tokenizer(target: EvalTarget, dataset: TokenDataset) -> None:
    """A model scores only text in its own ids: its tokenizer must be the dataset's."""
    if reads_ids_of(target.tokenizer, dataset.tokenizer.description()):
        return
    theirs, ours = target.tokenizer.get("kind", "?"), dataset.tokenizer.name
    detail = f"the {theirs} tokenizer, {dataset.path} with {ours}" if theirs != ours else f"another {ours} vocabulary than {dataset.path}"
    flag = f" --tokenizer {theirs}" if theirs in ("gpt2", "char") else (" --tokenizer bpe:N" if theirs == "bpe" else "")
    raise UserError(
        f"{target.label} was trained with {detail}: evaluate it on data prepared with its tokenizer "
        f"(`hellogpt prepare TEXTS --out DIR{flag}`)"
    )


def window_starts(dataset: TokenDataset, split: str, length: int, max_windows: Optional[int]) -> np.ndarray:
    """Starts of the consecutive windows of `length` (+1 for the last target) from the split's beginning."""
    available = (dataset.num_tokens(split) - 1) // length
    if available < 1:
        raise UserError(
            f"the {split} split of {dataset.path} has {dataset.num_tokens(split)} tokens, fewer than one window of "
            f"{length + 1}: evaluate on a larger dataset or the other split (--split)"
        )
    count = available if max_windows is None else min(available, max_windows)
    return np.arange(count, dtype=np.int64) * length


def load_target_model(target: EvalTarget) -> GPT:
    """The fp32 model of a target (a LoRA checkpoint comes merged with its verified base)."""
    if target.kind == "huggingface":
        from hellogpt.model.hf import load_pretrained

        return load_pretrained(target.location)[0]
    from hellogpt.checkpoints.format import load_checkpoint
    from hellogpt.checkpoints.loading import model_from_checkpoint

    return model_from_checkpoint(load_checkpoint(Path(target.location), map_weights=True))


@torch.no_grad()
def evaluate_model(
    model: GPT,
    label: str,
    tokenizer: Tokenizer,
    dataset: TokenDataset,
    split: str,
    starts: np.ndarray,
    length: int,
    device: torch.device,
    dtype: torch.dtype,
    on_progress: Optional[Callable[[int, int], None]] = None,
) -> Evaluation:
    """Sum the cross-entropy of every next token in the windows (in float64) and count their bytes."""
    from hellogpt.hardware.devices import autocast_context

    model = model.to(device).eval()
    token_bytes = _bytes_per_token(tokenizer)
    tokens = dataset.tokens(split)
    total_nats, total_tokens, total_bytes = 0.0, 0, 0
    for first in range(0, len(starts), EVAL_BATCH_SIZE):
        batch_starts = starts[first : first + EVAL_BATCH_SIZE]
        windows = tokens[batch_starts[:, None] + np.arange(length + 1)].astype(np.int64)
        inputs = torch.from_numpy(windows[:, :-1]).to(device)
        targets = torch.from_numpy(windows[:, 1:])
        with autocast_context(device, dtype):
            logits, _ = model(inputs)
        nats = F.cross_entropy(logits.float().flatten(0, 1), targets.to(device).flatten(), reduction="sum")
        total_nats += float(nats.double())
        total_tokens += targets.numel()
        total_bytes += int(token_bytes[windows[:, 1:]].sum())
        if on_progress is not None:
            on_progress(first + len(batch_starts), len(starts))
    loss = total_nats / total_tokens
    return Evaluation(
        target=label,
        split=split,
        loss=loss,
        perplexity=math.exp(loss) if loss < 700 else math.inf,
        bits_per_byte=total_nats / math.log(2) / max(total_bytes, 1),
        tokens=total_tokens,
        bytes=total_bytes,
    )


def _bytes_per_token(tokenizer: Tokenizer) -> np.ndarray:
    """UTF-8 bytes of every token id (what bits per byte divides by); special tokens (end-of-text between documents,
    chat markers) stand for no text and count none, so tokenizers that separate documents differently compare fairly."""
    sizes = np.array([len(tokenizer.token_bytes(token_id)) for token_id in range(tokenizer.vocab_size)], dtype=np.int64)
    sizes[list(tokenizer.special_tokens.values())] = 0
    return sizes
