"""The architectures by name (`model.arch`): one model file each, built from a `GPTConfig` by its `arch`."""

from __future__ import annotations

from hellogpt.model.base import CausalLM, GPTConfig
from hellogpt.model.gpt import GPT
from hellogpt.model.qwen3 import Qwen3

# The config schema's `model.arch` names these (a test checks that the two agree).
ARCHITECTURES: dict[str, type[CausalLM]] = {"gpt2": GPT, "qwen3": Qwen3}


def build_model(config: GPTConfig) -> CausalLM:
    """A freshly initialised model of `config.arch`; ValueError for a name this version does not know."""
    architecture = ARCHITECTURES.get(config.arch)
    if architecture is None:
        raise ValueError(f"unknown architecture {config.arch!r}: use one of {', '.join(ARCHITECTURES)}")
    return architecture(config)
