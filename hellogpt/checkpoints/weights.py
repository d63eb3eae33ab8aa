"""A GPT built around a checkpoint's weights: wrapper prefixes stripped, tensors assigned, mismatches in one line.

Below both `loading` (a plain checkpoint) and `lora_base` (a base under adapters), so neither imports the other
to build a model.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from hellogpt.checkpoints.format import MAX_NAMES_IN_ERROR
from hellogpt.errors import UserError
from hellogpt.model.architectures import build_model
from hellogpt.model.base import CausalLM, GPTConfig

# Prefixes that torch.compile (`_orig_mod.`) and DDP/DataParallel (`module.`) put on parameter names.
WRAPPER_PREFIXES = ("_orig_mod.", "module.")


def gpt_from_state_dict(config: GPTConfig, state_dict: Mapping[str, torch.Tensor]) -> CausalLM:
    """The model of `config.arch` built around `state_dict`'s own tensors (assigned, not copied: no random init,
    no second copy)."""
    with torch.device("meta"):
        model = build_model(config)
    _check_weights_fit(model, state_dict, config)
    complete = dict(state_dict)
    for name, source in model.tied_weights.items():
        complete.setdefault(name, complete[source])
    model.load_state_dict(complete, strict=True, assign=True)
    model.finish_loading()  # assigning untied the tied weights; derived tables are rebuilt beside the weights
    return model


def strip_wrapper_prefixes(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Parameter names without the `_orig_mod.` (torch.compile) and `module.` (DDP) prefixes."""
    cleaned = {}
    for name, tensor in state_dict.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in WRAPPER_PREFIXES:
                if name.startswith(prefix):
                    name, stripped = name[len(prefix) :], True
        cleaned[name] = tensor
    return cleaned


def count_parameters(state_dict: Mapping[str, torch.Tensor]) -> int:
    """Parameters as `GPT.num_parameters()` counts them: tied LM head once, position embeddings excluded."""
    state_dict = strip_wrapper_prefixes(state_dict)
    skipped = {"transformer.wpe.weight"}
    if "transformer.wte.weight" in state_dict:
        skipped.add("lm_head.weight")
    return sum(tensor.numel() for name, tensor in state_dict.items() if name not in skipped)


def _check_weights_fit(model: CausalLM, state_dict: Mapping[str, torch.Tensor], config: GPTConfig) -> None:
    """One readable line instead of load_state_dict's multi-line RuntimeError."""
    expected = model.state_dict()
    tied = {name for name, source in model.tied_weights.items() if source in state_dict}
    missing = [name for name in expected if name not in state_dict and name not in tied]
    unexpected = [name for name in state_dict if name not in expected]
    wrong_shape = [
        f"{name} {tuple(state_dict[name].shape)} vs {tuple(tensor.shape)}"
        for name, tensor in expected.items()
        if name in state_dict and tuple(state_dict[name].shape) != tuple(tensor.shape)
    ]
    problems = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
        if names:
            shown = ", ".join(names[:MAX_NAMES_IN_ERROR]) + (" ..." if len(names) > MAX_NAMES_IN_ERROR else "")
            problems.append(f"{label}: {shown}")
    if problems:
        shape = f"n_layer={config.n_layer} n_head={config.n_head} n_embd={config.n_embd} vocab_size={config.vocab_size}"
        raise UserError(
            f"the checkpoint's weights do not fit its architecture ({shape}): {'; '.join(problems)}; "
            "the file was edited or written by another program"
        )
