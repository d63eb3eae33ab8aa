"""A LoRA chat tune of a model without rows for the chat markers (Hugging Face GPT-2's 50257): the two new rows
train on their own (`added_rows`), the base rows stay frozen, the checkpoint holds them with the adapters, and
loading it (what `chat` does) gives exactly the trained model's logits, the markers' included; resume is exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from hellogpt.checkpoints.format import load_checkpoint
from hellogpt.checkpoints.loading import model_from_checkpoint
from hellogpt.checkpoints.weights import gpt_from_state_dict
from hellogpt.data.chat_template import TURN_END, TURN_START
from hellogpt.data.prepare import prepare_dataset
from hellogpt.model import hf
from hellogpt.model.added_rows import add_row_adapters, state_with_rows
from hellogpt.model.lora import (
    ADAPTER_SUFFIXES,
    LoraSpec,
    add_adapters,
    count_adapter_parameters,
    load_adapter_state_dict,
)
from hellogpt.train.events import StepEvent
from hellogpt.train.loop import train
from hellogpt.train.tune import load_tuning_source
from tests.train.conftest import events_of, tiny_config

GPT2_ROWS = 50257
SETTINGS = (
    "model.block_size=64", "lora.enabled=true", "lora.rank=2", "lora.dropout=0.0", "optim.learning_rate=1e-2",
    "optim.warmup_iters=0", "train.eval_interval=3", "train.eval_iters=1", "optim.lr_decay_iters=3",
    "sample.max_new_tokens=8", "train.batch_size=2", "train.gradient_accumulation_steps=1",
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random transformers GPT-2 of the tiny config's shape (50257 rows, tied head) and a gpt2 chat dataset."""
    folder = tmp_path_factory.mktemp("chat_lora")
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64)).save_pretrained(folder / "hf")
    records = [
        {"messages": [{"role": "user", "content": f"Sound of the {animal}?"},
                      {"role": "assistant", "content": f"The {animal} says {animal[::-1]}."}]}
        for animal in ("cat", "dog", "owl", "bee") * 3
    ]
    (folder / "chats.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    prepare_dataset([str(folder / "chats.jsonl")], folder / "data", tokenizer="gpt2", block_size=64)
    return folder


def _tune(folder: Path, checkpoint: Path, max_iters: int, resume: bool = False) -> list:
    resolved = tiny_config(*SETTINGS, f"train.max_iters={max_iters}")
    init = None if resume else load_tuning_source(str(folder / "hf"), folder, resolved.config)[0]
    return list(train(resolved, data_dir=folder / "data", checkpoint_path=checkpoint, init=init, resume=resume))


@pytest.fixture(scope="module")
def straight(folder: Path) -> tuple[Path, list]:
    """Three steps of a LoRA chat tune on the Hugging Face GPT-2: its checkpoint and events."""
    return folder / "straight.pt", _tune(folder, folder / "straight.pt", 3)


def test_a_lora_chat_tune_trains_the_marker_rows_and_loads_as_the_trained_model(
    folder: Path, straight: tuple[Path, list]
) -> None:
    checkpoint = load_checkpoint(straight[0])
    assert checkpoint.is_lora and checkpoint.model_args.vocab_size == GPT2_ROWS + 2
    assert all(name.endswith(ADAPTER_SUFFIXES) for name in checkpoint.model)
    lora_numbers = sum(tensor.numel() for name, tensor in checkpoint.model.items() if ".lora_" in name)
    assert count_adapter_parameters(checkpoint.model) == lora_numbers + 2 * 32  # the tied head's rows count once
    added = checkpoint.model["transformer.wte.parametrizations.weight.0.added_rows"]
    base = GPT2LMHeadModel.from_pretrained(folder / "hf").transformer.wte.weight.detach()
    assert added.shape == (2, 32) and not torch.allclose(added, base.mean(0).expand(2, -1))  # trained, not the mean

    # The model as it trained: the frozen base grown by two rows, adapters and added rows on it, unmerged.
    state, first = state_with_rows(hf.load_pretrained(str(folder / "hf"))[0].state_dict(), GPT2_ROWS + 2)
    trained = gpt_from_state_dict(checkpoint.model_args, state)
    add_adapters(trained, LoraSpec.from_dict(checkpoint.lora))
    add_row_adapters(trained, first)
    load_adapter_state_dict(trained, checkpoint.model)
    loaded = model_from_checkpoint(checkpoint).eval()
    assert torch.equal(loaded.transformer.wte.weight[:GPT2_ROWS], base)  # the base rows never changed
    assert loaded.lm_head.weight is loaded.transformer.wte.weight  # still tied
    ids = torch.tensor([[GPT2_ROWS, 464, 3797, GPT2_ROWS + 1, 198, GPT2_ROWS, 1]])  # <|im_start|> ... <|im_end|> ...
    torch.testing.assert_close(loaded(ids)[0], trained.eval()(ids)[0], atol=1e-5, rtol=0)
    assert checkpoint.tokenizer["special_tokens"] == [TURN_START, TURN_END]


def test_a_lora_chat_tune_with_added_rows_resumes_exactly(
    folder: Path, straight: tuple[Path, list], tmp_path: Path
) -> None:
    _tune(folder, tmp_path / "split.pt", 2)
    resumed = _tune(folder, tmp_path / "split.pt", 3, resume=True)
    assert [e.loss for e in events_of(StepEvent, resumed)] == [e.loss for e in events_of(StepEvent, straight[1])][2:]
    split, whole = load_checkpoint(tmp_path / "split.pt").model, load_checkpoint(straight[0]).model
    assert split.keys() == whole.keys() and all(torch.equal(split[name], whole[name]) for name in whole)


def test_an_untied_head_gets_added_rows_of_its_own_and_merges_exactly() -> None:
    from dataclasses import replace

    from hellogpt.model.architectures import build_model
    from hellogpt.model.gpt import GPTConfig
    from hellogpt.model.lora import merge_adapters

    config = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=10, dropout=0.0, bias=False, arch="qwen3")
    state, first = state_with_rows(build_model(config).state_dict(), 12)
    model = gpt_from_state_dict(replace(config, vocab_size=12), state)
    add_adapters(model, LoraSpec(2, 4.0, 0.0, ("self_attn.q_proj",)))
    add_row_adapters(model, first)
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert {name for name in trainable if name.endswith(".added_rows")} == {
        "model.embed_tokens.parametrizations.weight.0.added_rows", "lm_head.parametrizations.weight.0.added_rows"
    }
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter))
    ids = torch.tensor([[10, 3, 11, 5]])
    before = model.eval()(ids)[0]
    merged = merge_adapters(model)
    assert merged.lm_head.weight is not merged.model.embed_tokens.weight
    torch.testing.assert_close(merged(ids)[0], before, atol=1e-5, rtol=0)
