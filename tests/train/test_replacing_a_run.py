"""A new run over an earlier one (--overwrite): the earlier files stay until the new run first saves, and then none
of them can be taken for the new run's state."""

from __future__ import annotations

from pathlib import Path

from hellogpt.checkpoints.format import load_checkpoint
from hellogpt.checkpoints.paths import latest_checkpoint_path
from hellogpt.train.events import CheckpointEvent, StepEvent
from hellogpt.train.loop import train
from hellogpt.train.resume import resume_source
from tests.train.conftest import events_of, tiny_config
from tests.train.test_stopping import run_until


def test_a_new_runs_first_save_to_the_latest_state_removes_the_earlier_runs_best(char_dataset: Path, tmp_path: Path) -> None:
    config = tiny_config("train.always_save_checkpoint=false")
    best = tmp_path / "tiny.pt"
    list(train(config, data_dir=char_dataset, checkpoint_path=best))
    assert load_checkpoint(best).step == 8
    events = run_until(config, char_dataset, best, lambda event: isinstance(event, StepEvent) and event.step == 2)
    latest = latest_checkpoint_path(best)
    assert [event.path for event in events_of(CheckpointEvent, events)] == [str(latest)]
    assert not best.exists()  # the earlier run's step-8 model would otherwise be what --resume continues
    assert resume_source(best) == latest and load_checkpoint(latest).step == 2

