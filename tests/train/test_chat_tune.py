"""Tuning on conversations: only the replies are trained (a gradient test), a model without rows for the chat
markers grows them as the mean of the others, the checkpoint is a chat model, and resume is exact."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch

from hellogpt.checkpoints.format import gpt_config_from_args, load_checkpoint
from hellogpt.data.chat_prepare import ROLE_TEXT
from hellogpt.data.chat_template import CHATML_TEMPLATE, TURN_END, TURN_START
from hellogpt.data.loader import mask_file_name, open_dataset, split_file_name
from hellogpt.data.prepare import prepare_dataset
from hellogpt.model.gpt import GPT
from hellogpt.train.events import StepEvent
from hellogpt.train.loop import train
from hellogpt.train.tune import load_tuning_source
from hellogpt.train.vocabulary import with_vocabulary_rows
from tests.train.conftest import events_of, tiny_config, write_char_dataset

ANIMALS = ("cat", "dog", "owl", "bee", "fox", "elk", "ant", "yak")
CHAT = ("model.block_size=64", "optim.warmup_iters=0", "train.eval_interval=2", "train.max_iters=4", "optim.lr_decay_iters=4")


def _records() -> list[dict]:
    return [
        {"messages": [
            {"role": "user", "content": f"Sound of the {animal}?"},
            {"role": "assistant", "content": f"The {animal} says {animal[::-1]}."},
        ]}
        for animal in ANIMALS * 3
    ]


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("chat")
    (folder / "chats.jsonl").write_text("\n".join(json.dumps(record) for record in _records()) + "\n")
    prepare_dataset([str(folder / "chats.jsonl")], folder / "data", tokenizer="char", block_size=64)
    return folder / "data"


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny char model of exactly the chat set's characters, sized to them (no rows to spare), 4 steps old."""
    contents = " ".join(message["content"] for record in _records() for message in record["messages"])
    data = write_char_dataset(tmp_path_factory.mktemp("base") / "data", (ROLE_TEXT + contents) * 20)
    path = data.parent / "base.pt"
    list(train(tiny_config("model.block_size=64", "train.max_iters=4", "train.eval_interval=4"), data_dir=data, checkpoint_path=path))
    return path


def _tune(base: Path, data: Path, checkpoint: Path, *overrides: str, resume: bool = False) -> list:
    resolved = tiny_config(*CHAT, *overrides)
    init = None if resume else load_tuning_source(str(base), base.parent, resolved.config)[0]
    return list(train(resolved, data_dir=data, checkpoint_path=checkpoint, init=init, resume=resume))


def test_a_user_tokens_target_changes_no_gradient_and_a_reply_tokens_does(chat_dir: Path, tmp_path: Path) -> None:
    dataset = open_dataset(chat_dir)
    tokens, mask = np.array(dataset.tokens("train")), np.array(dataset._mask("train"))
    question_mark = dataset.tokenizer.encode("?")[0]
    user_position = int(np.flatnonzero(tokens == question_mark)[0])  # inside the first user message
    reply_position = int(np.flatnonzero(mask)[0])
    assert not mask[user_position] and mask[reply_position]
    shape = {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 64, "dropout": 0.0, "bias": False}
    model = GPT(gpt_config_from_args({**shape, "vocab_size": dataset.tokenizer.vocab_size}))

    def gradient_with(position: Optional[int]) -> torch.Tensor:
        changed = tmp_path / f"changed-{position}"
        shutil.copytree(chat_dir, changed)
        if position is not None:
            ids = tokens.copy()
            ids[position] = (ids[position] + 1) % len(dataset.tokenizer.chars)
            ids.tofile(changed / split_file_name("train"))
        # The inputs stay the original ones: only the targets come from the changed data.
        inputs, _ = dataset.sample_batch("train", 24, 64, np.random.default_rng(0))
        _, targets = open_dataset(changed).sample_batch("train", 24, 64, np.random.default_rng(0))
        model.zero_grad()
        model(torch.from_numpy(inputs), torch.from_numpy(targets))[1].backward()
        return torch.cat([parameter.grad.flatten() for parameter in model.parameters()])

    original = gradient_with(None)
    assert torch.equal(gradient_with(user_position), original)
    assert not torch.equal(gradient_with(reply_position), original)
    assert (chat_dir / mask_file_name("train")).is_file()


def test_new_marker_rows_are_the_mean_of_the_others_and_a_tied_head_stays_tied() -> None:
    embedding = torch.randn(10, 4)
    init = {"model_args": {"vocab_size": 10}, "model": {"transformer.wte.weight": embedding, "lm_head.weight": embedding}}
    grown = with_vocabulary_rows(init, 12)
    rows = grown["model"]["transformer.wte.weight"]
    assert rows.shape == (12, 4) and torch.equal(rows[:10], embedding)
    assert torch.allclose(rows[10], embedding.mean(0)) and torch.allclose(rows[11], embedding.mean(0))
    assert grown["model"]["lm_head.weight"] is rows and grown["model_args"]["vocab_size"] == 12
    assert with_vocabulary_rows(grown, 12) is grown


def test_tuning_on_chats_makes_a_chat_model_with_the_marker_rows(base_checkpoint: Path, chat_dir: Path, tmp_path: Path) -> None:
    events = _tune(base_checkpoint, chat_dir, tmp_path / "chat.pt")
    base, tuned = load_checkpoint(base_checkpoint), load_checkpoint(tmp_path / "chat.pt")
    assert tuned.model_args.vocab_size == base.model_args.vocab_size + 2
    assert tuned.chat_template == CHATML_TEMPLATE
    assert tuned.tokenizer["special_tokens"] == [TURN_START, TURN_END]
    assert all(np.isfinite(event.loss) for event in events_of(StepEvent, events))


def test_resume_of_a_chat_tune_continues_the_same_loss_curve(base_checkpoint: Path, chat_dir: Path, tmp_path: Path) -> None:
    straight = _tune(base_checkpoint, chat_dir, tmp_path / "straight.pt")
    split = tmp_path / "split.pt"
    first = _tune(base_checkpoint, chat_dir, split, "train.max_iters=2")
    second = _tune(base_checkpoint, chat_dir, split, resume=True)
    losses = [event.loss for event in events_of(StepEvent, straight)]
    assert [event.loss for event in events_of(StepEvent, first + second)] == losses
    resumed, uninterrupted = load_checkpoint(split).model, load_checkpoint(tmp_path / "straight.pt").model
    assert all(torch.equal(resumed[name], uninterrupted[name]) for name in uninterrupted)


def test_an_untied_head_grows_rows_of_its_own() -> None:
    embedding, head = torch.randn(10, 4), torch.randn(10, 4)
    init = {"model_args": {"vocab_size": 10}, "model": {"model.embed_tokens.weight": embedding, "lm_head.weight": head}}
    grown = with_vocabulary_rows(init, 11)["model"]
    assert torch.allclose(grown["model.embed_tokens.weight"][10], embedding.mean(0))
    assert torch.allclose(grown["lm_head.weight"][10], head.mean(0))


def test_the_training_sample_of_a_chat_model_is_its_reply_to_a_question() -> None:
    from hellogpt.data.chat_template import chat_tokenizer
    from hellogpt.data.tokenizer import gpt2_tokenizer
    from hellogpt.train.evaluation import sample_prompt

    tokenizer = chat_tokenizer(gpt2_tokenizer())
    expected = f"{TURN_START}user\nWhat is this?{TURN_END}\n{TURN_START}assistant\n"
    assert tokenizer.decode(sample_prompt(tokenizer)) == expected
    assert sample_prompt(gpt2_tokenizer()) == [gpt2_tokenizer().eot_id]
