"""The training loop on a tiny char model: events, exact resume, divergence, misfits, missing data."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace
from pathlib import Path

import pytest
import torch

from hellogpt.checkpoints.format import load_checkpoint
from hellogpt.errors import UserError
from hellogpt.train.events import CheckpointEvent, EvalEvent, RunFinished, RunStarted, StepEvent
from hellogpt.train.distributed import DistributedContext
from hellogpt.train.evaluation import loss_sum_dtype
from hellogpt.model.gpt import GPT
from hellogpt.train import loop as loop_module
from hellogpt.train.budget import TimeBudget
from hellogpt.train.loop import train
from hellogpt.train.resume import restored_rng, weights_of
from tests.train.conftest import events_of, tiny_config, write_char_dataset


def run(resolved, data_dir: Path, checkpoint: Path, **options) -> list:
    return list(train(resolved, data_dir=data_dir, checkpoint_path=checkpoint, **options))


def test_a_run_reports_start_steps_evals_checkpoints_and_finish(char_dataset: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "tiny.pt"
    events = run(tiny_config(), char_dataset, checkpoint)
    assert isinstance(events[0], RunStarted) and isinstance(events[-1], RunFinished)
    assert [event.step for event in events_of(StepEvent, events)] == list(range(1, 9))
    assert [event.step for event in events_of(EvalEvent, events)] == [4, 8]
    assert [event.step for event in events_of(CheckpointEvent, events)] == [4, 8]
    assert events[-1].reason == "completed" and events[-1].step == 8
    assert events[0].tokens_per_step == 4 * 32 * 2
    payload = load_checkpoint(checkpoint)
    assert payload.step == 8 and payload.origin == {"kind": "scratch"}
    assert payload.model_args.vocab_size == payload.config["model"]["vocab_size"] > 0


def test_the_final_evaluation_carries_a_sample_in_the_dataset_alphabet(char_dataset: Path, tmp_path: Path) -> None:
    events = run(tiny_config(), char_dataset, tmp_path / "tiny.pt")
    final_eval = events_of(EvalEvent, events)[-1]
    alphabet = json.loads((char_dataset / "meta.json").read_text())["tokenizer"]["chars"]
    assert final_eval.sample and set(final_eval.sample) <= set(alphabet)


def test_resume_continues_the_same_loss_curve(char_dataset: Path, tmp_path: Path) -> None:
    settings = ("model.dropout=0.1", "train.eval_interval=4", "optim.lr_decay_iters=8")
    straight = run(tiny_config(*settings, "train.max_iters=8"), char_dataset, tmp_path / "straight.pt")
    split = tmp_path / "split.pt"
    first_half = run(tiny_config(*settings, "train.max_iters=4"), char_dataset, split)
    second_half = run(tiny_config(*settings, "train.max_iters=8"), char_dataset, split, resume=True)
    straight_losses = [event.loss for event in events_of(StepEvent, straight)]
    split_losses = [event.loss for event in events_of(StepEvent, first_half + second_half)]
    assert split_losses == straight_losses
    assert events_of(EvalEvent, second_half)[-1].val_loss == events_of(EvalEvent, straight)[-1].val_loss
    assert second_half[0].start_step == 4
    resumed, uninterrupted = load_checkpoint(split).model, load_checkpoint(tmp_path / "straight.pt").model
    assert all(torch.equal(resumed[name], uninterrupted[name]) for name in uninterrupted)


def test_always_save_off_writes_only_on_a_new_best(char_dataset: Path, tmp_path: Path) -> None:
    config = tiny_config("train.always_save_checkpoint=false", "train.eval_interval=1", "optim.learning_rate=0.05")
    events = run(config, char_dataset, tmp_path / "best.pt")
    evals = events_of(EvalEvent, events)
    improving_steps = [e.step for index, e in enumerate(evals) if e.val_loss < min([x.val_loss for x in evals[:index]] or [1e9])]
    assert [event.step for event in events_of(CheckpointEvent, events)] == improving_steps
    assert load_checkpoint(tmp_path / "best.pt").best_val_loss == min(e.val_loss for e in evals)


def make_losses_nan_from_step_6(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every training forward pass after the 10th (2 micro-batches per step: step 6 and later) returns a NaN loss."""
    from hellogpt.model.gpt import GPT

    original_forward = GPT.forward
    calls = {"count": 0}

    def forward_that_blows_up(self, idx, targets=None, cache=None):
        logits, loss = original_forward(self, idx, targets, cache)
        if self.training and targets is not None:
            calls["count"] += 1
            if calls["count"] > 10:
                loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(GPT, "forward", forward_that_blows_up)


def test_a_nan_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint(
    char_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_losses_nan_from_step_6(monkeypatch)
    checkpoint = tmp_path / "tiny.pt"
    events = run(tiny_config(), char_dataset, checkpoint)
    finished = events[-1]
    assert finished.reason == "diverged" and finished.step == 5
    assert "step 6" in finished.message and str(checkpoint) in finished.message and "\n" not in finished.message
    assert load_checkpoint(checkpoint).step == 4


def test_resume_refuses_a_checkpoint_of_another_architecture(char_dataset: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "tiny.pt"
    run(tiny_config("train.max_iters=4"), char_dataset, checkpoint)
    with pytest.raises(UserError, match="n_embd 64 vs 32"):
        run(tiny_config("model.n_embd=64"), char_dataset, checkpoint, resume=True)


def test_resume_refuses_a_checkpoint_of_another_vocabulary(char_dataset: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "tiny.pt"
    run(tiny_config("train.max_iters=4"), char_dataset, checkpoint)
    other = write_char_dataset(tmp_path / "other", "abcdefgh" * 2000)
    with pytest.raises(UserError, match="another tokenizer"):
        run(tiny_config(), other, checkpoint, resume=True)


def test_resume_of_a_finished_run_says_to_raise_max_iters(char_dataset: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "tiny.pt"
    run(tiny_config("train.max_iters=4"), char_dataset, checkpoint)
    with pytest.raises(UserError, match="train.max_iters"):
        run(tiny_config("train.max_iters=4"), char_dataset, checkpoint, resume=True)


def test_a_vocabulary_smaller_than_the_tokenizer_is_refused(char_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="model.vocab_size 10 is smaller"):
        run(tiny_config("model.vocab_size=10"), char_dataset, tmp_path / "tiny.pt")


def test_a_missing_dataset_names_the_prepare_command(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"hellogpt prepare PATH/TO/TEXTS --out .*missing --tokenizer char"):
        run(tiny_config("data.tokenizer=char"), tmp_path / "missing", tmp_path / "tiny.pt")


class ForwardPassClock:
    """The clock of the loop and its budget: time passes only in the model's forward passes, a training one
    (with its backward) costing three times an evaluation one, so the budget's arithmetic is checked exactly."""

    EVAL_FORWARD_SECONDS = 0.01

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 1000.0
        forward = GPT.forward

        def timed_forward(model: GPT, *args, **kwargs):
            self.now += self.EVAL_FORWARD_SECONDS * (3 if model.training else 1)
            return forward(model, *args, **kwargs)

        monkeypatch.setattr(GPT, "forward", timed_forward)
        monkeypatch.setattr(time, "perf_counter", lambda: self.now)
        monkeypatch.setattr(loop_module, "TimeBudget", lambda seconds=None: TimeBudget(seconds, started=self.now))


def test_the_time_budget_ends_with_an_evaluation_and_a_checkpoint_inside_it(
    char_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ForwardPassClock(monkeypatch)
    budget = 3.0
    events = run(tiny_config("train.max_iters=100000", "train.eval_interval=100000"), char_dataset, tmp_path / "tiny.pt", max_seconds=budget)
    finished = events[-1]
    assert finished.reason == "time_budget" and 1 < finished.step < 100000
    assert [event.step for event in events_of(EvalEvent, events)] == [finished.step]
    assert [event.step for event in events_of(CheckpointEvent, events)] == [finished.step]
    assert finished.wall_seconds <= budget  # the closing evaluation and save fit in the budget


def test_a_budget_shorter_than_one_step_saves_nothing_and_says_so(char_dataset: Path, tmp_path: Path) -> None:
    events = run(tiny_config("train.max_iters=100000"), char_dataset, tmp_path / "tiny.pt", max_seconds=0.0)
    assert events[-1].reason == "time_budget" and events[-1].step == 0
    assert not events_of(CheckpointEvent, events) and not (tmp_path / "tiny.pt").exists()
    assert "ended before the first step could finish" in (events[-1].message or "")


def test_tune_init_starts_from_the_given_weights_with_a_fresh_step_count(char_dataset: Path, tmp_path: Path) -> None:
    source = tmp_path / "source.pt"
    run(tiny_config("train.max_iters=4"), char_dataset, source)
    payload = load_checkpoint(source)
    init = {**weights_of(payload), "origin": {"kind": "checkpoint", "path": str(source), "step": 4}}
    events = run(tiny_config("model.dropout=0.1", "train.max_iters=2"), char_dataset, tmp_path / "tuned.pt", init=init)
    assert events[0].start_step == 0 and events[-1].step == 2
    tuned = load_checkpoint(tmp_path / "tuned.pt")
    assert tuned.origin["path"] == str(source) and tuned.model_args.dropout == 0.1
    first_loss = events_of(StepEvent, events)[0].loss
    assert first_loss < events_of(StepEvent, run(tiny_config(), char_dataset, tmp_path / "scratch.pt"))[0].loss


def test_eval_losses_sum_in_float64_except_on_mps_which_has_none() -> None:
    assert loss_sum_dtype(torch.device("cpu")) == torch.float64
    assert loss_sum_dtype(torch.device("cuda", 0)) == torch.float64
    assert loss_sum_dtype(torch.device("mps")) == torch.float32


def test_each_torchrun_rank_resumes_its_own_rngs_and_rank_0s_on_another_rank_count() -> None:
    payload = SimpleNamespace(rng="rank 0", rank_rngs=["rank 0", "rank 1"])
    rank_1_of_2 = DistributedContext(rank=1, local_rank=1, world_size=2, device=torch.device("cuda", 1))
    rank_1_of_4 = DistributedContext(rank=1, local_rank=1, world_size=4, device=torch.device("cuda", 1))
    single = DistributedContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    assert restored_rng(payload, rank_1_of_2) == "rank 1"
    assert restored_rng(payload, rank_1_of_4) == "rank 0"
    assert restored_rng(SimpleNamespace(rng="rank 0", rank_rngs=None), single) == "rank 0"


def test_a_nan_loss_between_log_lines_stops_at_its_step_without_a_per_step_read(
    char_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_losses_nan_from_step_6(monkeypatch)
    checkpoint = tmp_path / "tiny.pt"
    events = run(tiny_config("train.log_interval=4"), char_dataset, checkpoint)  # read at steps 1, 4 and 8 only
    finished = events[-1]
    assert finished.reason == "diverged" and finished.step == 5
    assert "loss nan at step 6" in finished.message and str(checkpoint) in finished.message
    assert [event.step for event in events_of(StepEvent, events)] == [1, 4]
    assert load_checkpoint(checkpoint).step == 4
