"""Fine-tuning: where the starting weights come from, the tuning defaults, and the name the result gets."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from hellogpt.config.layers import Layer, ResolvedConfig
from hellogpt.errors import UserError

# Laid over the base before the profile: a gentle rate and short, best-only runs suit a
# pretrained model (the seed's config_from_poe.yaml is the model for these values).
TUNE_DEFAULTS = Layer(
    "tune defaults",
    {
        "optim": {"learning_rate": 3e-5, "min_lr": 3e-6, "warmup_iters": 20, "lr_decay_iters": 1000},
        "train": {"max_iters": 1000, "eval_interval": 100, "eval_iters": 40, "always_save_checkpoint": False},
    },
)
TUNED_SUFFIX = "_tuned"


def load_tuning_source(spec: str, checkpoints_dir: Path) -> tuple[dict[str, Any], Optional[Path]]:
    """The weights to tune from `spec` (one of our checkpoints, else a Hugging Face model) and our file, if any.

    The result is what `train(init=...)` takes: model_args, model, tokenizer, origin.
    """
    from hellogpt.train.checkpoint import load_checkpoint, resolve_checkpoint_path

    checkpoint_path = resolve_checkpoint_path(spec, checkpoints_dir)
    if not checkpoint_path.is_file():  # a folder may be a Hugging Face model directory
        from hellogpt.model.hf import is_huggingface_source

        if is_huggingface_source(spec):
            return _huggingface_init(spec), None
    checkpoint = load_checkpoint(checkpoint_path)
    init = {
        "model_args": checkpoint.model_args.to_dict(),
        "model": checkpoint.model,
        "tokenizer": checkpoint.tokenizer,
        "origin": {"kind": "checkpoint", "path": str(checkpoint_path), "step": checkpoint.step},
    }
    return init, checkpoint_path


def existing_checkpoint(spec: str, checkpoints_dir: Path) -> Optional[Path]:
    """Our checkpoint file that `spec` names, when there is one (else it may be a Hugging Face model)."""
    from hellogpt.train.checkpoint import resolve_checkpoint_path

    path = resolve_checkpoint_path(spec, checkpoints_dir)
    return path if path.is_file() else None


def _huggingface_init(spec: str) -> dict[str, Any]:
    from hellogpt.model.hf import load_pretrained

    model, origin = load_pretrained(spec)
    return {
        "model_args": model.config.to_dict(),
        "model": model.state_dict(),
        "tokenizer": {"kind": "gpt2"},
        "origin": origin,
    }


def tuned_checkpoint_path(
    resolved: ResolvedConfig, spec: str, source_path: Optional[Path], checkpoint_option: Optional[str]
) -> Path:
    """Where the tuned model goes: --checkpoint, else train.checkpoint_name when a layer set it, else
    `<source>_tuned.pt` in train.out_dir; never over the source."""
    from hellogpt.train.checkpoint import resolve_checkpoint_path

    train_config = resolved.config.train
    name = checkpoint_option or train_config.checkpoint_name
    if checkpoint_option is None and resolved.source_of("train.checkpoint_name") == "base":
        stem = source_path.stem if source_path is not None else Path(spec.rstrip("/")).name
        name = f"{stem}{TUNED_SUFFIX}.pt"
    chosen = resolve_checkpoint_path(name, Path(train_config.out_dir))
    if source_path is not None and chosen.resolve() == source_path.resolve():
        raise UserError(
            f"tuning would overwrite its source {source_path}: name the result with --checkpoint NEW.pt "
            f"or --set train.checkpoint_name=NEW"
        )
    return chosen
