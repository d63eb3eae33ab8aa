"""`system.measure: off`: training, chat and the server set up on fixed rules and never read the probes' clock."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hellogpt.generate import choose_decode_threads, prepare_for_inference
from hellogpt.hardware.probes import harness
from hellogpt.serve.batching import Scheduler
from hellogpt.serve.steps import StepLayout
from hellogpt.train.events import RunStarted
from hellogpt.train.loop import train
from tests.serve.conftest import char_tokenizer, tiny_model
from tests.train.conftest import char_dataset, tiny_config  # noqa: F401  (char_dataset is a fixture)


@pytest.fixture
def clock_forbidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness, "clock", lambda: pytest.fail("a probe read the clock under system.measure=off"))


def test_training_sets_up_without_timing_and_shows_no_mfu(
    char_dataset: Path, tmp_path: Path, clock_forbidden: None  # noqa: F811
) -> None:
    resolved = tiny_config("system.measure=off", "system.peak_flops=null", "train.max_iters=2", "train.eval_interval=2")
    events = list(train(resolved, data_dir=char_dataset, checkpoint_path=tmp_path / "tiny.pt"))
    assert isinstance(events[0], RunStarted)


def test_chat_prepares_its_model_without_timing(clock_forbidden: None) -> None:
    threads = torch.get_num_threads()
    model = prepare_for_inference(tiny_model(char_tokenizer()), torch.device("cpu"), torch.bfloat16, measure="off")
    assert not any("Packed" in type(module).__name__ for module in model.modules())
    assert choose_decode_threads(model, "off") == threads == torch.get_num_threads()


def test_the_server_starts_without_timing_on_the_first_candidate_layout(clock_forbidden: None) -> None:
    tokenizer = char_tokenizer()
    scheduler = Scheduler(tiny_model(tokenizer), tokenizer, max_batch=2, threads=torch.get_num_threads(), measure="off")
    scheduler.start()
    try:
        assert isinstance(scheduler.layout, StepLayout)
        assert scheduler.decode_threads == torch.get_num_threads()
    finally:
        scheduler.stop(timeout=30)
