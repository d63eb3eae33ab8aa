"""Stopping under torchrun: the ranks agree to stop at the same boundary, save, and resume exactly (gloo, CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest
import torch

from hellogpt.checkpoints.format import load_checkpoint
from hellogpt.train.resume import resume_source
from tests.train.conftest import TINY_SETTINGS, shakespeare_text, write_char_dataset

REPO_ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
# Two rounds of evaluation batches per split on two ranks: a stop before the second round is mid-evaluation.
SETTINGS = [*TINY_SETTINGS, "train.max_iters=8", "train.eval_interval=4", "train.eval_iters=4"]


def torchrun_train(
    workdir: Path, checkpoint: str, *extra: str, stop_at_eval_step: Optional[int] = None
) -> subprocess.CompletedProcess:
    """`torchrun -m hellogpt train`; with `stop_at_eval_step`, rank 1 alone gets Ctrl-C inside that evaluation."""
    arguments = ["train", "--data", "data/tiny", "--checkpoint", checkpoint, "--plain", *extra]
    for assignment in SETTINGS:
        arguments += ["--set", assignment]
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}
    module = "hellogpt"
    if stop_at_eval_step is not None:
        environment["STOP_AT_EVAL_STEP"] = str(stop_at_eval_step)
        module = "tests.train.stop_in_evaluation"
    return subprocess.run(
        [*TORCHRUN, "-m", module, *arguments], cwd=workdir, env=environment, capture_output=True, text=True, timeout=600
    )


def final_state(workdir: Path, checkpoint: str) -> dict[str, torch.Tensor]:
    return load_checkpoint(resume_source(workdir / "checkpoints" / checkpoint)).model


@pytest.mark.slow
def test_ctrl_c_on_one_rank_mid_evaluation_stops_both_saves_and_resumes_exactly(tmp_path: Path) -> None:
    write_char_dataset(tmp_path / "data" / "tiny", shakespeare_text())
    straight = torchrun_train(tmp_path, "straight.pt")
    assert straight.returncode == 0, straight.stderr[-3000:]

    stopped = torchrun_train(tmp_path, "split.pt", stop_at_eval_step=4)
    # Both ranks left the evaluation at the same round (rank 0 got no signal) and exited as interrupted (130).
    assert "exitcode  : 130" in stopped.stderr, stopped.stderr[-3000:]
    assert "interrupted: saved" in stopped.stderr
    saved = load_checkpoint(resume_source(tmp_path / "checkpoints" / "split.pt"))
    assert (saved.step, saved.pending_eval) == (4, True)
    assert "eval step 4" not in stopped.stdout

    resumed = torchrun_train(tmp_path, "split.pt", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "eval step 4" in resumed.stdout and "eval step 8" in resumed.stdout
    expected, got = final_state(tmp_path, "straight.pt"), final_state(tmp_path, "split.pt")
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, got[name]), name
