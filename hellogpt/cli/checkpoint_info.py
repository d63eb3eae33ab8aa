"""What `hellogpt info CHECKPOINT` shows: progress, losses, shape, tokenizer, origin, a LoRA base, the config.

A report for people (and `--json` for scripts); the checkpoint format itself lives in `hellogpt.checkpoints`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from hellogpt.checkpoints.format import Checkpoint, load_checkpoint
from hellogpt.checkpoints.paths import latest_checkpoint_path
from hellogpt.checkpoints.weights import count_parameters
from hellogpt.model.architectures import build_model
from hellogpt.model.base import GPTConfig
from hellogpt.model.lora import count_adapter_parameters


def describe_checkpoint(path: Path) -> dict[str, Any]:
    """What `hellogpt info CHECKPOINT` shows (and prints as JSON): progress, losses, shape, tokenizer, origin, config."""
    path = Path(path)
    checkpoint = load_checkpoint(path)
    stat = path.stat()
    latest = latest_checkpoint_path(path)
    return {
        "path": str(path),
        "run_name": checkpoint.run_name,
        "step": checkpoint.step,
        "train_loss": checkpoint.train_loss,
        "val_loss": checkpoint.val_loss,
        "best_val_loss": checkpoint.best_val_loss,
        "dtype": checkpoint.dtype or "not recorded (written before hellogpt recorded it)",
        "n_params": _base_parameters(checkpoint.model_args) if checkpoint.is_lora else count_parameters(checkpoint.model),
        "architecture": checkpoint.model_args.to_dict(),
        "tokenizer": _describe_tokenizer(checkpoint.tokenizer),
        "chat": "ChatML template (a chat model)" if checkpoint.chat_template else "no template (a base model)",
        "origin": checkpoint.origin,
        "size_bytes": stat.st_size,
        "modified": datetime.fromtimestamp(stat.st_mtime, tz=timezone.utc).isoformat(timespec="seconds"),
        "format_version": checkpoint.format_version,
        "hellogpt_version": checkpoint.hellogpt_version,
        "resumable": checkpoint.resumable,
        "pending_eval": checkpoint.pending_eval,
        "latest_state": str(latest) if latest.is_file() and latest != path else None,
        **(_describe_lora(checkpoint) if checkpoint.is_lora else {}),
        "config": checkpoint.config,
    }


def _describe_lora(checkpoint: Checkpoint) -> dict[str, Any]:
    """The adapters and the base they need: `chat`, `eval` and `export` load that base and merge."""
    return {
        "lora": {**(checkpoint.lora or {}), "adapter_params": count_adapter_parameters(checkpoint.model)},
        "base": _describe_base(checkpoint.base or {}),
    }


def _base_parameters(config: GPTConfig) -> int:
    with torch.device("meta"):
        return build_model(config).num_parameters()


def _describe_base(reference: Mapping[str, Any]) -> dict[str, Any]:
    """What `hellogpt info` shows of a base: where it is, whether it is there, its recorded hash."""
    source = str(reference.get("source"))
    present = Path(source).exists() if reference.get("kind") == "checkpoint" or Path(source).is_absolute() else None
    return {
        "kind": reference.get("kind"),
        "source": source,
        "sha256": reference.get("sha256"),
        "present": "yes" if present else ("no" if present is False else "from the Hugging Face cache or hub"),
    }


def _describe_tokenizer(description: Any) -> Optional[dict[str, Any]]:
    if not isinstance(description, dict):
        return None
    kind = description.get("kind")
    specials = description.get("special_tokens") or []
    added = {"special_tokens": list(specials)} if specials else {}
    if kind == "char":  # counted without building it (a char tokenizer is only its characters and specials)
        return {"kind": "char", "vocab_size": len(description.get("chars", "")) + len(specials), **added}
    from hellogpt.data.tokenizer import tokenizer_from_description

    return {"kind": kind, "vocab_size": tokenizer_from_description(description).vocab_size, **added}
