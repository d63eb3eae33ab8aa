"""`hellogpt train` and `hellogpt tune` end to end on tiny char models (CliRunner, and a real process for signals)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hellogpt.checkpoints.format import load_checkpoint
from hellogpt.cli import app
from hellogpt.cli.train import parse_duration
from hellogpt.errors import UserError
from tests.train.conftest import TINY_SETTINGS, shakespeare_text, write_char_dataset

REPO_ROOT = Path(__file__).resolve().parents[2]


def sets(*overrides: str) -> list[str]:
    """`--set` options for the tiny model, one micro-batch per step, and `overrides`."""
    return sets_of([*TINY_SETTINGS, "train.gradient_accumulation_steps=1", *overrides])


def sets_of(assignments: list[str]) -> list[str]:
    return [argument for assignment in assignments for argument in ("--set", assignment)]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh folder as the current directory, with a tiny char dataset at data/tiny."""
    monkeypatch.chdir(tmp_path)
    write_char_dataset(tmp_path / "data" / "tiny", shakespeare_text())
    return tmp_path


def invoke(*arguments: str):
    return CliRunner().invoke(app, list(arguments))


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in " ".join(lines[0].split()), lines[0]


def test_train_writes_the_checkpoint_and_ends_with_the_chat_command(workdir: Path) -> None:
    result = invoke("train", "--data", "data/tiny", "--checkpoint", "tiny.pt", "--plain", *sets())
    assert result.exit_code == 0, result.output
    assert load_checkpoint(workdir / "checkpoints" / "tiny.pt").step == 8
    assert "chat with it: hellogpt chat --checkpoint checkpoints/tiny.pt" in result.output


def test_a_missing_dataset_is_one_line_with_the_prepare_command(workdir: Path) -> None:
    result = invoke("train", "--set", "data.dataset=edgar_poe", *sets())
    assert_one_line_error(result, "dataset data/edgar_poe not found", "hellogpt prepare PATH/TO/TEXTS --out data/edgar_poe")


def test_a_diverging_run_exits_2_naming_the_step(workdir: Path) -> None:
    result = invoke("train", "--data", "data/tiny", "--plain", *sets("optim.learning_rate=1e6", "optim.warmup_iters=0"))
    assert_one_line_error(result, "training diverged", "at step")


def test_durations_read_seconds_minutes_and_hours() -> None:
    assert [parse_duration(text) for text in ("90s", "10m", "2h", "1h30m", "45")] == [90, 600, 7200, 5400, 45]
    with pytest.raises(UserError, match="not a duration"):
        parse_duration("soon")


def test_tune_starts_from_our_checkpoint_and_writes_a_new_one(workdir: Path) -> None:
    assert invoke("train", "--data", "data/tiny", "--checkpoint", "base.pt", *sets("train.max_iters=4")).exit_code == 0
    result = invoke("tune", "--from", "base.pt", "--data", "data/tiny", "--plain", *sets("train.max_iters=2"))
    assert result.exit_code == 0, result.output
    tuned = load_checkpoint(workdir / "checkpoints" / "base_tuned.pt")
    assert tuned.origin == {"kind": "checkpoint", "path": "checkpoints/base.pt", "step": 4}
    assert tuned.step == 2 and load_checkpoint(workdir / "checkpoints" / "base.pt").step == 4


def test_tune_refuses_to_overwrite_its_source(workdir: Path) -> None:
    assert invoke("train", "--data", "data/tiny", "--checkpoint", "base.pt", *sets("train.max_iters=4")).exit_code == 0
    result = invoke("tune", "--from", "base.pt", "--data", "data/tiny", "--checkpoint", "base.pt", *sets())
    assert_one_line_error(result, "would overwrite its source")


def test_tune_refuses_a_config_that_contradicts_the_architecture(workdir: Path) -> None:
    assert invoke("train", "--data", "data/tiny", "--checkpoint", "base.pt", *sets("train.max_iters=4")).exit_code == 0
    result = invoke("tune", "--gpt2base", "base.pt", "--data", "data/tiny", *sets("model.n_layer=3"))
    assert_one_line_error(result, "n_layer 3 vs 2")


def test_tune_refuses_a_dataset_with_another_tokenizer(workdir: Path) -> None:
    assert invoke("train", "--data", "data/tiny", "--checkpoint", "base.pt", *sets("train.max_iters=4")).exit_code == 0
    write_char_dataset(workdir / "data" / "abc", "abcdefgh " * 3000)
    result = invoke("tune", "--from", "base.pt", "--data", "data/abc", *sets())
    assert_one_line_error(result, "another tokenizer")


@pytest.mark.slow
def test_ctrl_c_saves_exits_130_and_resume_finishes_the_run(workdir: Path) -> None:
    command = [sys.executable, "-m", "hellogpt", "train", "--data", "data/tiny", "--checkpoint", "tiny.pt", "--plain"]
    command += sets("train.max_iters=100000", "train.eval_interval=100000")
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "NO_COLOR": "1"}
    process = subprocess.Popen(command, cwd=workdir, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    for line in process.stdout:  # wait until it really trains
        if line.startswith("step 3/"):
            break
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted: saved checkpoints/tiny.pt" in stderr and "--resume" in stderr and "Traceback" not in stderr
    saved_step = load_checkpoint(workdir / "checkpoints" / "tiny.pt").step
    assert saved_step >= 3
    result = invoke("train", "--data", "data/tiny", "--checkpoint", "tiny.pt", "--resume", *sets(f"train.max_iters={saved_step + 2}"))
    assert result.exit_code == 0, result.output
    assert load_checkpoint(workdir / "checkpoints" / "tiny.pt").step == saved_step + 2


def test_tune_from_a_hugging_face_name_goes_through_the_hf_seam(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    import numpy as np

    import hellogpt.model.hf as hf
    from hellogpt.data.tokenizer import gpt2_tokenizer
    from hellogpt.model.gpt import GPT, GPTConfig

    ids = np.array(gpt2_tokenizer().encode(shakespeare_text(20_000)), dtype=np.uint16)
    folder = workdir / "data" / "bpe"
    folder.mkdir(parents=True)
    ids[:-500].tofile(folder / "train.bin")
    ids[-500:].tofile(folder / "val.bin")
    (folder / "meta.json").write_text(json.dumps({"tokenizer": {"kind": "gpt2"}, "vocab_size": 50257, "dtype": "uint16"}))
    small_gpt2 = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=8, block_size=16, vocab_size=50257, bias=True, dropout=0.0, arch="gpt2"))
    monkeypatch.setattr(hf, "load_pretrained", lambda spec: (small_gpt2, {"kind": "huggingface", "source": spec}))
    loop_settings = [item for item in [*TINY_SETTINGS, "train.max_iters=2"] if not item.startswith("model.")]
    result = invoke("tune", "--from", "gpt2", "--data", "data/bpe", "--plain", *sets_of(loop_settings))
    assert result.exit_code == 0, result.output
    tuned = load_checkpoint(workdir / "checkpoints" / "gpt2_tuned.pt")
    assert tuned.origin == {"kind": "huggingface", "source": "gpt2"}
    assert tuned.model_args.n_embd == 8 and tuned.tokenizer == {"kind": "gpt2"}
