"""`model.arch: qwen3` end to end: train, resume, eval, LoRA tune (CliRunner, a tiny char model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hellogpt.checkpoints.format import load_checkpoint
from hellogpt.cli import app
from tests.train.conftest import shakespeare_text, write_char_dataset

SETTINGS = [
    "model.arch=qwen3", "model.n_layer=1", "model.n_head=2", "model.n_embd=16", "model.block_size=16",
    "train.batch_size=2", "train.gradient_accumulation_steps=1", "train.eval_interval=2", "train.eval_iters=1",
    "optim.warmup_iters=1", "system.measure=off", "system.device=cpu",
]


def run(*arguments: str, settings: tuple[str, ...] = ()) -> str:
    options = [part for setting in [*SETTINGS, *settings] for part in ("--set", setting)]
    result = CliRunner().invoke(app, [*arguments, *options])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.slow
def test_qwen3_trains_resumes_evaluates_and_tunes_with_lora(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_char_dataset(tmp_path / "data" / "tiny", shakespeare_text(20000))
    run("train", "--data", "data/tiny", "--checkpoint", "q.pt", "--plain", settings=("train.max_iters=2",))
    run("train", "--data", "data/tiny", "--checkpoint", "q.pt", "--plain", "--resume", settings=("train.max_iters=4",))
    checkpoint = load_checkpoint(tmp_path / "checkpoints" / "q.pt")
    assert checkpoint.step == 4 and checkpoint.model_args.arch == "qwen3"
    assert "model.layers.0.self_attn.q_norm.weight" in checkpoint.model

    scores = json.loads(CliRunner().invoke(app, ["eval", "checkpoints/q.pt", "--data", "data/tiny", "--iters", "1", "--json"]).output)
    assert 0 < scores[0]["val_loss"] < 5

    tune = ["tune", "--from", "checkpoints/q.pt", "--data", "data/tiny", "--checkpoint", "q_lora.pt", "--lora", "--plain"]
    result = CliRunner().invoke(app, [*tune, "--set", "train.max_iters=2", "--set", "train.eval_interval=2",
                                      "--set", "train.eval_iters=1", "--set", "system.measure=off", "--set", "train.batch_size=2"])
    assert result.exit_code == 0, result.output
    tuned = load_checkpoint(tmp_path / "checkpoints" / "q_lora.pt")
    assert tuned.lora is not None and "self_attn.q_proj" in tuned.lora["targets"]
