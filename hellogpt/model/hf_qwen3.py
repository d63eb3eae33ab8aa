"""Our qwen3 <-> transformers' Qwen3ForCausalLM: the config.json that describes it, and its tensors.

Our modules carry transformers' names (`hellogpt.model.qwen3`), so the weights map one to one: only the padding
rows past the tokenizer's vocabulary are cut from the embedding and the head. transformers is imported inside the
functions only (it takes seconds to import).
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

import torch

from hellogpt.model.base import GPTConfig
from hellogpt.model.qwen3 import RMS_NORM_EPS, ROPE_THETA, Qwen3, intermediate_size

# The tensors whose rows are token ids (cut to the tokenizer's vocabulary on export).
VOCABULARY_TENSORS = ("model.embed_tokens.weight", "lm_head.weight")


def qwen3_config_json(config: GPTConfig, vocab_size: int, eot_id: Optional[int]) -> str:
    """config.json as transformers' save_pretrained writes it for this shape (the differences from Qwen3's defaults)."""
    from transformers import Qwen3Config

    hf_config = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=config.n_embd,
        intermediate_size=intermediate_size(config),
        num_hidden_layers=config.n_layer,
        num_attention_heads=config.n_head,
        num_key_value_heads=config.n_head,
        head_dim=config.head_dim,
        hidden_act="silu",
        max_position_embeddings=config.block_size,
        rms_norm_eps=RMS_NORM_EPS,
        rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
        tie_word_embeddings=False,
        attention_bias=False,
        attention_dropout=config.dropout,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
    )
    hf_config.architectures = ["Qwen3ForCausalLM"]
    return hf_config.to_json_string(use_diff=True)


def qwen3_hf_tensors(
    state: dict[str, torch.Tensor], config: GPTConfig, vocab_size: int
) -> Iterator[tuple[str, torch.Tensor]]:
    """Our state dict as transformers names it (the same names), fp32, vocabulary rows cut to `vocab_size`.
    KeyError names the first tensor `state` lacks."""
    with torch.device("meta"):
        expected = Qwen3(config).state_dict()
    for name in expected:
        tensor = state[name].detach().to("cpu", torch.float32)
        if name in VOCABULARY_TENSORS:
            tensor = tensor[:vocab_size]
        yield name, tensor.contiguous()


def qwen3_config_from_hf(hf_config: Any) -> tuple[Optional[GPTConfig], list[str]]:
    """Our qwen3 config for a transformers Qwen3 config, and what of it our model cannot reproduce (a list of
    `key=value`; the config is None when it is not empty)."""
    head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads
    rope = getattr(hf_config, "rope_parameters", None) or {
        "rope_type": "default", "rope_theta": getattr(hf_config, "rope_theta", None)
    }
    config = GPTConfig(
        n_layer=hf_config.num_hidden_layers, n_head=hf_config.num_attention_heads, n_embd=hf_config.hidden_size,
        block_size=hf_config.max_position_embeddings, vocab_size=hf_config.vocab_size, dropout=0.0, bias=False,
        arch="qwen3",
    )
    checks = {
        "num_key_value_heads": (hf_config.num_key_value_heads, hf_config.num_attention_heads),
        "head_dim": (head_dim, config.head_dim),
        "intermediate_size": (hf_config.intermediate_size, intermediate_size(config)),
        "rms_norm_eps": (hf_config.rms_norm_eps, RMS_NORM_EPS),
        "rope_type": (rope.get("rope_type"), "default"),
        "rope_theta": (rope.get("rope_theta"), ROPE_THETA),
        "tie_word_embeddings": (bool(getattr(hf_config, "tie_word_embeddings", False)), False),
        "attention_bias": (bool(getattr(hf_config, "attention_bias", False)), False),
        "hidden_act": (hf_config.hidden_act, "silu"),
        "use_sliding_window": (bool(getattr(hf_config, "use_sliding_window", False)), False),
    }
    unsupported = [f"{key}={theirs}" for key, (theirs, ours) in checks.items() if theirs != ours]
    return (None if unsupported else config), unsupported
