"""The one table that maps the old Hello-GPT flat keys onto our sections.

The old tool's files (`train.yaml`, a dataset's `config_ext.yaml`, ...) are flat
mappings; `--config` accepts them unchanged by moving each key to its section.
"""

from __future__ import annotations

from typing import Any

# Order matters where two old keys land on one new key: `device` (which may name
# cuda:N) is applied after the coarser `device_type`.
LEGACY_KEYS: dict[str, str] = {
    "out_dir": "train.out_dir",
    "checkpoint_name": "train.checkpoint_name",
    "eval_interval": "train.eval_interval",
    "log_interval": "train.log_interval",
    "eval_iters": "train.eval_iters",
    "always_save_checkpoint": "train.always_save_checkpoint",
    "gradient_accumulation_steps": "train.gradient_accumulation_steps",
    "batch_size": "train.batch_size",
    "max_iters": "train.max_iters",
    "block_size": "model.block_size",
    "n_layer": "model.n_layer",
    "n_head": "model.n_head",
    "n_embd": "model.n_embd",
    "dropout": "model.dropout",
    "bias": "model.bias",
    "vocab_size": "model.vocab_size",
    "learning_rate": "optim.learning_rate",
    "weight_decay": "optim.weight_decay",
    "beta1": "optim.beta1",
    "beta2": "optim.beta2",
    "grad_clip": "optim.grad_clip",
    "decay_lr": "optim.decay_lr",
    "warmup_iters": "optim.warmup_iters",
    "lr_decay_iters": "optim.lr_decay_iters",
    "min_lr": "optim.min_lr",
    "device_type": "system.device",
    "device": "system.device",
    "data_type": "system.dtype",
    "dmax_flops": "system.peak_flops",
    "dataset": "data.dataset",
    "max_new_tokens": "sample.max_new_tokens",
    "temperature": "sample.temperature",
    "top_k": "sample.top_k",
}


def is_legacy_key(key: str) -> bool:
    """True for a key of the old flat format."""
    return key in LEGACY_KEYS


def legacy_to_sections(flat: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Move each known flat key to its section; unknown keys are left for the caller to report."""
    sections: dict[str, dict[str, Any]] = {}
    for old_key, dotted in LEGACY_KEYS.items():
        if old_key in flat:
            section, key = dotted.split(".")
            sections.setdefault(section, {})[key] = flat[old_key]
    return sections
