"""An exported chat model speaks ChatML in transformers: its tokenizer_config.json carries our template and the
markers, and `apply_chat_template(messages, add_generation_prompt=True)` gives exactly the ids we prompt with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hellogpt.data.chat_template import CHATML_TEMPLATE, TURN_END, TURN_START, chat_tokenizer, render_prompt
from hellogpt.data.bpe import train_bpe
from hellogpt.data.tokenizer import Tokenizer, gpt2_tokenizer
from hellogpt.export import export_checkpoint
from hellogpt.model.gpt import GPT, GPTConfig
from tests.chat_models import chat_char_tokenizer, save_chat_checkpoint, write_chat_checkpoint

CONVERSATIONS = [
    [{"role": "user", "content": "hello"}],
    [{"role": "system", "content": "be brief."}, {"role": "user", "content": "hi"},
     {"role": "assistant", "content": "hi."}, {"role": "user", "content": "why? say it, twice."}],
]


def chat_checkpoint(path: Path, tokenizer: Tokenizer, rows: int) -> Path:
    """A tiny random model with `rows` embedding rows, saved as a chat model over `tokenizer`."""
    torch.manual_seed(0)
    config = GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=32, vocab_size=rows, bias=True, dropout=0.0,
                       arch="gpt2")
    return save_chat_checkpoint(path, GPT(config), tokenizer)


@pytest.mark.parametrize("kind", ["char", "gpt2", "bpe"])
def test_transformers_prompts_an_exported_chat_model_with_our_ids(kind: str, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    if kind == "char":
        checkpoint, ours = write_chat_checkpoint(tmp_path / "chat.pt"), chat_char_tokenizer()
    elif kind == "gpt2":  # the markers get ids 50257, 50258, within the 50304 padded rows
        ours = chat_tokenizer(gpt2_tokenizer())
        checkpoint = chat_checkpoint(tmp_path / "chat.pt", ours, 50304)
    else:
        ours = chat_tokenizer(train_bpe([message["content"] for message in CONVERSATIONS[1]] * 10, 280))
        checkpoint = chat_checkpoint(tmp_path / "chat.pt", ours, ours.vocab_size)
    out = export_checkpoint(torch.load(checkpoint, weights_only=True), tmp_path / "exported")
    config = json.loads((out / "tokenizer_config.json").read_text("utf-8"))
    assert config["chat_template"] == CHATML_TEMPLATE
    theirs = AutoTokenizer.from_pretrained(out)
    assert theirs.convert_tokens_to_ids([TURN_START, TURN_END]) == [ours.special_tokens[TURN_START],
                                                                     ours.special_tokens[TURN_END]]
    for messages in CONVERSATIONS:
        ids = theirs.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        assert list(ids) == render_prompt(messages, ours)
