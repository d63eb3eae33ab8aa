"""DDP through torchrun on the CPU (gloo, 2 processes) against a single process with the same global batch."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hellogpt.checkpoints.format import load_checkpoint
from hellogpt.errors import UserError
from hellogpt.train.distributed import local_accumulation_steps
from tests.train.conftest import TINY_SETTINGS, shakespeare_text, write_char_dataset

REPO_ROOT = Path(__file__).resolve().parents[2]
SETTINGS = [
    *TINY_SETTINGS,
    "train.max_iters=20",
    "train.eval_interval=10",
    "train.eval_iters=4",
    "train.log_interval=5",
    "optim.learning_rate=1e-2",
    "optim.lr_decay_iters=20",
]
VAL_LOSS = re.compile(r"eval step 20 \| train loss [\d.]+ \| val loss ([\d.]+)")
# Only a guard against a hang, never a margin: on a loaded 2-core machine one of these runs took 80 s.
HANG_GUARD_SECONDS = 600


def test_accumulation_steps_are_shared_out_among_ranks() -> None:
    assert local_accumulation_steps(8, 2) == 4
    with pytest.raises(UserError, match="divisible by the number of processes"):
        local_accumulation_steps(5, 2)


def run_hellogpt(launcher: list[str], workdir: Path, checkpoint: str, *settings: str) -> subprocess.CompletedProcess:
    arguments = ["train", "--data", "data/tiny", "--checkpoint", checkpoint, "--plain"]
    for assignment in [*SETTINGS, *settings]:
        arguments += ["--set", assignment]
    return launch([*launcher, "-m", "hellogpt", *arguments], workdir)


def launch(command: list[str], workdir: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}
    return subprocess.run(command, cwd=workdir, env=environment, capture_output=True, text=True, timeout=HANG_GUARD_SECONDS)


def what_failed(run: subprocess.CompletedProcess) -> str:
    """A failed launch's ranks' own errors (printed first) and torchrun's summary (printed last)."""
    stderr = run.stderr
    return stderr if len(stderr) < 6000 else f"{stderr[:3000]}\n...\n{stderr[-3000:]}"


@pytest.mark.slow
def test_two_gloo_ranks_agree_save_once_and_track_a_single_process(tmp_path: Path) -> None:
    write_char_dataset(tmp_path / "data" / "tiny", shakespeare_text())
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    # The profiles' recipe, Qwen3's block with Muon (a step of its own beside AdamW's): the ranks must still make the
    # same updates. GPT-2's block runs under DDP in the LoRA and dtype tests below.
    recipe = ("model.arch=qwen3", "model.bias=false", "optim.name=muon")
    distributed = run_hellogpt(torchrun, tmp_path, "ddp.pt", *recipe)
    # The loop compares the ranks' weight digests at the end and fails loudly if they differ.
    assert distributed.returncode == 0, what_failed(distributed)
    assert "device cpu x2" in distributed.stdout
    assert sorted(path.name for path in (tmp_path / "checkpoints").iterdir()) == ["ddp.pt"]
    assert distributed.stdout.count("run records") == 1
    single = run_hellogpt([sys.executable], tmp_path, "single.pt", *recipe)
    assert single.returncode == 0, what_failed(single)
    ddp_loss, single_loss = (float(VAL_LOSS.search(run.stdout).group(1)) for run in (distributed, single))
    assert abs(ddp_loss - single_loss) < 0.1
    checkpoint = load_checkpoint(tmp_path / "checkpoints" / "ddp.pt")
    assert checkpoint.sampler["world_size"] == 2
    assert checkpoint.model_args.arch == "qwen3"


@pytest.mark.slow
def test_two_gloo_ranks_tune_lora_adapters_and_save_them_once(tmp_path: Path) -> None:
    write_char_dataset(tmp_path / "data" / "tiny", shakespeare_text())
    base = run_hellogpt([sys.executable], tmp_path, "base.pt")
    assert base.returncode == 0, what_failed(base)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    arguments = ["tune", "--from", "base.pt", "--lora", "--data", "data/tiny", "--checkpoint", "lora.pt", "--plain"]
    for assignment in [*SETTINGS, "train.max_iters=4", "train.eval_interval=4", "train.activation_checkpointing=true"]:
        arguments += ["--set", assignment]
    tuned = launch([*torchrun, "-m", "hellogpt", *arguments], tmp_path)
    # The ranks compare weight digests (adapters and frozen base) at the end and fail loudly if they differ.
    assert tuned.returncode == 0, what_failed(tuned)
    checkpoint = load_checkpoint(tmp_path / "checkpoints" / "lora.pt")
    assert checkpoint.lora is not None and all("lora_" in name for name in checkpoint.model)


# Each rank as if only rank 1's CPU had native bf16, and what dtype each rank trains in, written beside the run.
RANKS_THAT_WOULD_DISAGREE = """
import os
from pathlib import Path

from hellogpt.hardware import devices
from hellogpt.train import loop

devices.cpu_has_native_bf16 = lambda: os.environ["RANK"] == "1"
build_run = loop.build_run


def recording_build_run(*args, **kwargs):
    parts = build_run(*args, **kwargs)
    Path(f"dtype.rank{os.environ['RANK']}").write_text(str(parts.dtype))
    return parts


loop.build_run = recording_build_run
from hellogpt.__main__ import main

main()
"""


@pytest.mark.slow
def test_ranks_that_would_choose_different_dtypes_all_train_in_rank_0s(tmp_path: Path) -> None:
    write_char_dataset(tmp_path / "data" / "tiny", shakespeare_text())
    script = tmp_path / "ranks_disagree.py"
    script.write_text(RANKS_THAT_WOULD_DISAGREE)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    arguments = ["train", "--data", "data/tiny", "--checkpoint", "ddp.pt", "--plain"]
    # 256 wide: where the rule picks bf16 on a CPU with native bf16 (rank 1 here), fp32 without (rank 0).
    for assignment in [*SETTINGS, "model.n_layer=1", "model.n_head=4", "model.n_embd=256", "train.max_iters=2",
                       "train.eval_interval=2", "system.dtype=auto"]:
        arguments += ["--set", assignment]
    run = launch([*torchrun, *arguments], tmp_path)
    assert run.returncode == 0, what_failed(run)
    assert [(tmp_path / f"dtype.rank{rank}").read_text() for rank in (0, 1)] == ["torch.float32", "torch.float32"]
    assert load_checkpoint(tmp_path / "checkpoints" / "ddp.pt").dtype == "float32"
