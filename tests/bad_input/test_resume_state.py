"""Damaged or hostile random state in a checkpoint: `--resume` stops at load with one line, before restoring anything.

Each file is a real checkpoint whose RNG or sampler part was edited and saved again with torch.save: it passes
torch's safe load, and restoring it would fail deep in training's setup (or, for numpy's position, silently read
past the key).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from tests.bad_input.test_checkpoints import (  # noqa: F401
    assert_one_line_error,
    edit_checkpoint,
    files_under,
    invoke,
    trained,
    workdir,
)
from tests.cli.test_train import sets

Payload = dict[str, Any]


def sampler_state(payload: Payload) -> Payload:
    return payload["sampler"]["states"][0]


def rank_rngs_of_a_damaged_copy(payload: Payload) -> None:
    """Rank 0's own RNGs (used by a run resumed on as many ranks as saved it) with a short torch state."""
    payload["rank_rngs"] = [{**payload["rng"], "torch": torch.zeros(10, dtype=torch.uint8)}]


DAMAGES: dict[str, tuple[Callable[[Payload], None], str]] = {
    "sampler-other-numpy-class": (lambda p: sampler_state(p).update(bit_generator="SeedSequence"), "sampler.states[0].bit_generator"),
    "sampler-mt19937": (lambda p: sampler_state(p).update(bit_generator="MT19937"), "sampler.states[0].bit_generator"),
    "sampler-dunder-name": (lambda p: sampler_state(p).update(bit_generator="__loader__"), "sampler.states[0].bit_generator"),
    "sampler-state-words": (lambda p: sampler_state(p).update(state={"state": -1, "inc": 1}), "sampler.states[0].state"),
    "sampler-no-states": (lambda p: p["sampler"].update(states=[]), "sampler.states"),
    "sampler-world-size-text": (lambda p: p["sampler"].update(world_size="1"), "sampler.world_size"),
    "sampler-bare-list": (lambda p: p.update(sampler=[1, 2]), "sampler"),
    "torch-state-wrong-size": (lambda p: p["rng"].update(torch=torch.zeros(10, dtype=torch.uint8)), "rng.torch"),
    "torch-state-floats": (lambda p: p["rng"].update(torch=torch.zeros(5056)), "rng.torch"),
    "numpy-key-short": (lambda p: p["rng"]["numpy"].update(key=torch.zeros(10, dtype=torch.int64)), "rng.numpy.key"),
    "numpy-position-past-key": (lambda p: p["rng"]["numpy"].update(position=10**6), "rng.numpy.position"),
    "numpy-other-generator": (lambda p: p["rng"]["numpy"].update(bit_generator="PCG64"), "rng.numpy.bit_generator"),
    "python-state-short": (lambda p: p["rng"]["python"].update(state=[1, 2, 3]), "rng.python.state"),
    "python-state-out-of-range": (
        lambda p: p["rng"]["python"].update(state=[2**40] * 625), "rng.python does not restore"
    ),
    "python-missing": (lambda p: p["rng"].pop("python"), "rng.python"),
    "cuda-state-short": (lambda p: p["rng"].update(cuda=[torch.zeros(3, dtype=torch.uint8)]), "rng.cuda[0]"),
    "rank-rngs-damaged": (rank_rngs_of_a_damaged_copy, "rank_rngs[0].torch"),
}


def resume():
    return invoke("train", "--data", "data/tiny", "--checkpoint", "tiny.pt", "--resume", "--plain", *sets("train.max_iters=12"))


@pytest.mark.parametrize("damage", list(DAMAGES), ids=list(DAMAGES))
def test_resume_of_a_damaged_random_state_is_one_line(damage: str, workdir: Path) -> None:
    change, field = DAMAGES[damage]
    edit_checkpoint(workdir / "checkpoints" / "tiny.pt", change)
    before = files_under(workdir)
    assert_one_line_error(resume(), "tiny.pt is a damaged checkpoint", field)
    assert files_under(workdir) == before


def test_info_of_a_damaged_random_state_is_one_line(workdir: Path) -> None:
    edit_checkpoint(workdir / "checkpoints" / "tiny.pt", DAMAGES["sampler-other-numpy-class"][0])
    before = files_under(workdir)
    assert_one_line_error(invoke("info", "checkpoints/tiny.pt"), "damaged checkpoint", "sampler.states[0].bit_generator")
    assert files_under(workdir) == before


def test_an_untouched_checkpoint_still_resumes(workdir: Path) -> None:
    result = resume()
    assert result.exit_code == 0, result.output
