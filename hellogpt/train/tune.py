"""Fine-tuning: where the starting weights come from, the tuning defaults, and the name the result gets."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

from hellogpt.checkpoints.format import load_checkpoint
from hellogpt.checkpoints.loading import model_from_checkpoint
from hellogpt.checkpoints.lora_base import checkpoint_base, huggingface_base
from hellogpt.checkpoints.paths import resolve_checkpoint_path
from hellogpt.config.layers import Layer, ResolvedConfig, load_command_defaults
from hellogpt.config.schema import RunConfig
from hellogpt.errors import UserError
from hellogpt.model import hf
from hellogpt.hardware.devices import choose_device, choose_dtype
from hellogpt.model.gpt import GPTConfig
from hellogpt.train.lora import frozen_dtype

TUNED_SUFFIX = "_tuned"
LORA_SUFFIX = "_lora"


def tune_defaults(lora: bool) -> Layer:
    """The defaults laid over the base for `tune` (config/profiles/defaults/tune.yaml), with LoRA's learning
    rates (tune-lora.yaml) for a LoRA tune."""
    tune = load_command_defaults("tune", "tune defaults")
    if not lora:
        return tune
    values = {section: dict(keys) for section, keys in tune.values.items()}
    for section, keys in load_command_defaults("tune-lora", "lora tune defaults").values.items():
        values.setdefault(section, {}).update(keys)
    return Layer("lora tune defaults", values)


def load_tuning_source(spec: str, checkpoints_dir: Path, config: RunConfig) -> tuple[dict[str, Any], Optional[Path]]:
    """The weights to tune from `spec` (one of our checkpoints, else a Hugging Face model) and our file, if any.

    The result is what `train(init=...)` takes: model_args, model, tokenizer, origin, and for a LoRA tune (lora.enabled)
    the base reference; the base's matrices are then read straight into the dtype they are held in, frozen.
    Our checkpoints are memory-mapped, never read into a second copy.
    """
    checkpoint_path = resolve_checkpoint_path(spec, checkpoints_dir)
    if not checkpoint_path.is_file():  # a folder may be a Hugging Face model directory
        if hf.is_huggingface_source(spec):
            return _huggingface_init(spec, config), None
    checkpoint = load_checkpoint(checkpoint_path, map_weights=True)
    init = {
        "model_args": checkpoint.model_args.to_dict(),
        "tokenizer": checkpoint.tokenizer,
        "origin": {"kind": "checkpoint", "path": str(checkpoint_path), "step": checkpoint.step},
    }
    if config.lora.enabled:
        init["model"], init["base"] = checkpoint_base(checkpoint_path, _base_dtype(config, checkpoint.model_args))
    elif checkpoint.is_lora:
        init["model"] = model_from_checkpoint(checkpoint).state_dict()
    else:
        init["model"] = checkpoint.model
    return init, checkpoint_path


def existing_checkpoint(spec: str, checkpoints_dir: Path) -> Optional[Path]:
    """Our checkpoint file that `spec` names, when there is one (else it may be a Hugging Face model)."""
    path = resolve_checkpoint_path(spec, checkpoints_dir)
    return path if path.is_file() else None


def _huggingface_init(spec: str, config: RunConfig) -> dict[str, Any]:
    init: dict[str, Any] = {"tokenizer": hf.pretrained_tokenizer(spec)[0]}
    if config.lora.enabled:
        architecture = hf.pretrained_architecture(spec)
        init["model"], init["base"] = huggingface_base(spec, _base_dtype(config, architecture))
        init["model_args"] = architecture.to_dict()
        init["origin"] = {"kind": "huggingface", "source": init["base"]["source"]}
        return init
    model, origin = hf.load_pretrained(spec)
    return {**init, "model_args": model.config.to_dict(), "model": model.state_dict(), "origin": origin}


def _base_dtype(config: RunConfig, architecture: GPTConfig) -> torch.dtype:
    """The dtype a new LoRA tune holds its frozen base in: from the dtype the run will compute in (its rule)."""
    return frozen_dtype(choose_dtype(config.system.dtype, choose_device(config.system.device), architecture))


def tuned_checkpoint_path(
    resolved: ResolvedConfig, spec: str, source_path: Optional[Path], checkpoint_option: Optional[str]
) -> Path:
    """Where the tuned model goes: --checkpoint, else train.checkpoint_name when a layer set it, else
    `<source>_tuned.pt` in train.out_dir; never over the source."""
    train_config = resolved.config.train
    name = checkpoint_option or train_config.checkpoint_name
    if checkpoint_option is None and resolved.source_of("train.checkpoint_name") == "base":
        stem = source_path.stem if source_path is not None else Path(spec.rstrip("/")).name
        suffix = LORA_SUFFIX if resolved.config.lora.enabled else TUNED_SUFFIX
        name = f"{stem}{suffix}.pt"
    chosen = resolve_checkpoint_path(name, Path(train_config.out_dir))
    if source_path is not None and chosen.resolve() == source_path.resolve():
        raise UserError(
            f"tuning would overwrite its source {source_path}: name the result with --checkpoint NEW.pt "
            f"or --set train.checkpoint_name=NEW"
        )
    return chosen
