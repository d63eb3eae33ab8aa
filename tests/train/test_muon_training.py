"""Training with optim.name=muon: an interrupted run resumes bit for bit; a resume may not switch optimizers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from hellogpt.checkpoints.format import load_checkpoint, save_checkpoint
from hellogpt.errors import UserError
from hellogpt.train.events import EvalEvent, StepEvent
from hellogpt.train.loop import train
from hellogpt.train.optimizer import optimizer_name_of_state
from tests.train.conftest import events_of, tiny_config

MUON = ("optim.name=muon", "optim.muon_learning_rate=0.02", "model.dropout=0.1", "optim.lr_decay_iters=8")


def run(resolved, data_dir: Path, checkpoint: Path, **options) -> list:
    return list(train(resolved, data_dir=data_dir, checkpoint_path=checkpoint, **options))


def test_a_muon_run_resumed_midway_equals_the_uninterrupted_one_bit_for_bit(char_dataset: Path, tmp_path: Path) -> None:
    straight = run(tiny_config(*MUON, "train.max_iters=8"), char_dataset, tmp_path / "straight.pt")
    split = tmp_path / "split.pt"
    first_half = run(tiny_config(*MUON, "train.max_iters=4"), char_dataset, split)
    assert optimizer_name_of_state(load_checkpoint(split).optimizer or {}) == "muon"
    second_half = run(tiny_config(*MUON, "train.max_iters=8"), char_dataset, split, resume=True)
    assert [event.loss for event in events_of(StepEvent, first_half + second_half)] == [
        event.loss for event in events_of(StepEvent, straight)
    ]
    assert events_of(EvalEvent, second_half)[-1].val_loss == events_of(EvalEvent, straight)[-1].val_loss
    resumed, uninterrupted = load_checkpoint(split), load_checkpoint(tmp_path / "straight.pt")
    assert all(torch.equal(resumed.model[name], uninterrupted.model[name]) for name in uninterrupted.model)
    momentum = [state["momentum_buffer"] for state in resumed.optimizer["state"].values() if "momentum_buffer" in state]
    expected = [state["momentum_buffer"] for state in uninterrupted.optimizer["state"].values() if "momentum_buffer" in state]
    assert momentum and all(torch.equal(mine, theirs) for mine, theirs in zip(momentum, expected))


def test_resuming_with_the_other_optimizer_is_refused_in_one_line(char_dataset: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "adamw.pt"
    run(tiny_config("train.max_iters=2", "train.eval_interval=2"), char_dataset, checkpoint)
    with pytest.raises(UserError, match=r"trained with optim.name=adamw and this run asks for muon: resume with --set optim.name=adamw"):
        run(tiny_config("optim.name=muon", "train.max_iters=4"), char_dataset, checkpoint, resume=True)


def test_a_qwen3_checkpoint_from_before_the_embedding_group_resumes_as_if_never_stopped(
    char_dataset: Path, tmp_path: Path
) -> None:
    qwen3 = (*MUON, "model.arch=qwen3", "model.bias=false")
    straight = run(tiny_config(*qwen3, "train.max_iters=8"), char_dataset, tmp_path / "straight.pt")
    split = tmp_path / "split.pt"
    first_half = run(tiny_config(*qwen3, "train.max_iters=4"), char_dataset, split)
    _write_in_layout_of_before(split)
    second_half = run(tiny_config(*qwen3, "train.max_iters=8"), char_dataset, split, resume=True)
    assert [event.loss for event in events_of(StepEvent, first_half + second_half)] == [
        event.loss for event in events_of(StepEvent, straight)
    ]


def _write_in_layout_of_before(path: Path) -> None:
    """The optimizer state as hellogpt wrote it before the untied embedding had a group of its own (the first of the
    matrices' group)."""
    checkpoint = load_checkpoint(path)
    state = checkpoint.optimizer or {}
    groups = [dict(group) for group in state["param_groups"]]
    (embedding_group,) = [group for group in groups if group.get("role") == "embedding"]
    groups.remove(embedding_group)
    groups[0]["params"] = [*embedding_group["params"], *groups[0]["params"]]
    save_checkpoint(path, dataclasses.replace(checkpoint, optimizer={**state, "param_groups": groups}))
