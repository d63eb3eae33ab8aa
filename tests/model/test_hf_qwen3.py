"""A qwen3 checkpoint exported as transformers' Qwen3ForCausalLM: AutoModelForCausalLM loads it with no custom
code, with our logits (fp32, 1e-5) and our greedy tokens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hellogpt.decode.stream import stream_tokens
from hellogpt.export import export_checkpoint
from hellogpt.gpt2 import GPT2_VOCAB_SIZE
from hellogpt.model.base import GPTConfig
from tests.model.test_qwen3 import trained_looking

# Our GPT-2-tokenizer models pad the vocabulary to 50304; the export cuts it to the tokenizer's 50257.
CONFIG = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=50304, dropout=0.0, bias=False, arch="qwen3")


@pytest.mark.slow
def test_an_exported_qwen3_loads_in_transformers_with_our_logits_and_greedy_tokens(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = trained_looking(CONFIG)
    payload = {"model_args": CONFIG.to_dict(), "model": model.state_dict(), "tokenizer": {"kind": "gpt2"}}
    out = export_checkpoint(payload, tmp_path / "exported")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM"] and "auto_map" not in config

    exported = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=False, dtype=torch.float32).eval()
    assert type(exported).__name__ == "Qwen3ForCausalLM"
    prompt = torch.randint(0, GPT2_VOCAB_SIZE, (1, 12), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        theirs = exported(prompt).logits
        ours = model(prompt)[0][..., :GPT2_VOCAB_SIZE]
        torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
        their_tokens = exported.generate(prompt, max_new_tokens=10, do_sample=False)[0, 12:].tolist()
    our_tokens = list(stream_tokens(model, prompt[0].tolist(), max_new_tokens=10, temperature=0.0, vocab_size=GPT2_VOCAB_SIZE))
    assert our_tokens == their_tokens


def test_an_exported_qwen3_loads_back_as_our_qwen3(tmp_path: Path) -> None:
    from hellogpt.model.hf import load_pretrained

    model = trained_looking(CONFIG)
    payload = {"model_args": CONFIG.to_dict(), "model": model.state_dict(), "tokenizer": {"kind": "gpt2"}}
    loaded, origin = load_pretrained(str(export_checkpoint(payload, tmp_path / "exported")))
    assert loaded.config == GPTConfig(**{**CONFIG.to_dict(), "vocab_size": GPT2_VOCAB_SIZE}) and origin["kind"] == "huggingface"
    prompt = torch.randint(0, GPT2_VOCAB_SIZE, (1, 12), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(loaded(prompt)[0], model(prompt)[0][..., :GPT2_VOCAB_SIZE], atol=0, rtol=0)


def test_a_qwen3_of_another_shape_is_refused_in_one_line(tmp_path: Path) -> None:
    from transformers import Qwen3Config

    from hellogpt.errors import UserError
    from hellogpt.model.hf import pretrained_architecture

    Qwen3Config(vocab_size=50257, hidden_size=32, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                num_hidden_layers=1, intermediate_size=64).save_pretrained(tmp_path)
    with pytest.raises(UserError, match="num_key_value_heads=1"):
        pretrained_architecture(str(tmp_path))
