"""LoRA checkpoints and their base: load the base frozen to tune on it, or merged with the adapters to use it.

A LoRA checkpoint holds only the adapters; its `base` names where the weights under them come from (a Hugging
Face model, or one of our checkpoints) with the sha256 of those weights, so that a missing or changed base is
a one-line error, never a silently different model.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import torch

from hellogpt.checkpoints.format import Checkpoint, load_checkpoint
from hellogpt.checkpoints.weights import gpt_from_state_dict, strip_wrapper_prefixes
from hellogpt.errors import UserError
from hellogpt.model import hf
from hellogpt.model.added_rows import add_row_adapters, state_with_rows
from hellogpt.model.architectures import ARCHITECTURES
from hellogpt.model.gpt import GPT
from hellogpt.model.lora import (
    LoraSpec,
    WeightsDigest,
    add_adapters,
    frozen_storage_dtype,
    load_adapter_state_dict,
    merge_adapters,
)

DIGEST_SHOWN = 12


def huggingface_base(spec: str, matrix_dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A Hugging Face model as a LoRA base: its weights (matrices in `matrix_dtype`) and the base reference."""
    digest = WeightsDigest()
    model, origin = hf.load_pretrained(spec, matrix_dtype=matrix_dtype, digest=digest)
    return model.state_dict(), {"kind": "huggingface", "source": origin["source"], "sha256": digest.hexdigest()}


def checkpoint_base(
    path: Path, matrix_dtype: torch.dtype, loading: tuple[Path, ...] = ()
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """One of our checkpoints (a LoRA one is merged first) as a LoRA base: weights and the base reference.

    The file is memory-mapped: weights that stay fp32 are used in place, the others are cast one by one.
    `loading` holds the LoRA checkpoints whose bases are being loaded around this one (outermost first): a base
    that is one of them again is a cycle, refused by name instead of recursing until Python gives up.
    """
    path = Path(path)
    _refuse_cycle(path.resolve(), loading)
    checkpoint = load_checkpoint(path, map_weights=True)
    if checkpoint.is_lora:
        state = merged_model(checkpoint, (*loading, path.resolve())).state_dict()
    else:
        state = strip_wrapper_prefixes(checkpoint.model)
    tied = ARCHITECTURES[checkpoint.model_args.arch].tied_weights  # GPT-2's head is its embedding: hashed once
    weights = {name: tensor for name, tensor in state.items() if name not in tied}
    digest = WeightsDigest().update_all(weights.items()).hexdigest()
    held = {name: tensor.to(frozen_storage_dtype(name, tensor.dim(), matrix_dtype)) for name, tensor in weights.items()}
    return held, {"kind": "checkpoint", "source": str(path.resolve()), "sha256": digest}


def verified_base(
    reference: Mapping[str, Any], matrix_dtype: torch.dtype, loading: tuple[Path, ...] = ()
) -> dict[str, torch.Tensor]:
    """The base a LoRA checkpoint names, loaded and checked against its recorded sha256 (`loading`: see
    `checkpoint_base`)."""
    kind, source = reference["kind"], reference["source"]
    if kind == "checkpoint" or Path(source).is_absolute():
        _require_present(Path(source), kind)
    if kind == "checkpoint":
        state, loaded = checkpoint_base(Path(source), matrix_dtype, loading)
    else:
        state, loaded = huggingface_base(source, matrix_dtype)
    if loaded["sha256"] != reference["sha256"]:
        raise UserError(
            f"the LoRA base {source} has changed since the adapters were tuned on it (sha256 "
            f"{loaded['sha256'][:DIGEST_SHOWN]}, recorded {reference['sha256'][:DIGEST_SHOWN]}): put the original "
            f"weights back, or tune new adapters on these with `hellogpt tune --from {source} --lora`"
        )
    return state


def merged_model(checkpoint: Checkpoint, loading: tuple[Path, ...] = ()) -> GPT:
    """A LoRA checkpoint as a plain fp32 GPT: its verified base with the adapters folded into the weights
    (`loading`: see `checkpoint_base`)."""
    # Token rows added under LoRA (the chat markers) are not in the base: it is grown, and the rows come with the adapters.
    state, first_added = state_with_rows(
        verified_base(checkpoint.base, torch.float32, loading), checkpoint.model_args.vocab_size
    )
    model = gpt_from_state_dict(checkpoint.model_args, state)
    add_adapters(model, LoraSpec.from_dict(checkpoint.lora))
    if first_added is not None:
        add_row_adapters(model, first_added)
    try:
        load_adapter_state_dict(model, checkpoint.model)
    except ValueError as error:
        raise UserError(f"the LoRA checkpoint's {error}: the file was edited or written by another program") from None
    return merge_adapters(model).requires_grad_(False)


def merged_checkpoint(checkpoint: Checkpoint) -> Checkpoint:
    """A LoRA checkpoint as a plain one holding the merged weights (what `hellogpt export` writes out)."""
    return replace(checkpoint, model=merged_model(checkpoint).state_dict(), lora=None, base=None)


def _refuse_cycle(path: Path, loading: tuple[Path, ...]) -> None:
    """UserError naming the loop when `path` is already being loaded as the base of a base."""
    if path not in loading:
        return
    cycle = " -> ".join(str(step) for step in (*loading[loading.index(path) :], path))
    raise UserError(
        f"the LoRA bases form a cycle ({cycle}): each names the next as the model its adapters were tuned on, so "
        "none of them can be loaded; the files were edited or written over one another: tune new adapters on a "
        "plain model with `hellogpt tune --from MODEL --lora`"
    )


def _require_present(path: Path, kind: str) -> None:
    if path.exists():
        return
    what = "checkpoint" if kind == "checkpoint" else "Hugging Face model directory"
    raise UserError(
        f"the LoRA base {path} is missing (the {what} the adapters were tuned on): put it back at that path, "
        f"or tune new adapters on another base with `hellogpt tune --from BASE --lora`"
    )
