"""Hugging Face GPT-2 through the CLI: tune from a transformers directory, chat with it, the offline error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel
from typer.testing import CliRunner

from hellogpt.cli import app
from hellogpt.model.gpt import GPT
from hellogpt.model.hf import load_pretrained

BLOCK_SIZE = 32
# Chat picks bf16 on CPUs with native bf16; token-for-token comparisons with transformers need fp32.
FP32 = ("--set", "system.dtype=float32")


def _command_exists(name: str) -> bool:
    return any(command.name == name for command in app.registered_commands)


needs_tune = pytest.mark.skipif(not _command_exists("tune"), reason="`hellogpt tune` is not registered yet")
needs_chat = pytest.mark.skipif(not _command_exists("chat"), reason="`hellogpt chat` is not registered yet")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random transformers GPT-2 (2 layers, width 64, 32 positions) saved with save_pretrained."""
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=64, n_positions=BLOCK_SIZE))
    directory = tmp_path_factory.mktemp("tiny-gpt2")
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def poems_data(poems_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hellogpt.data.prepare import prepare_dataset

    return prepare_dataset([str(poems_dir)], tmp_path_factory.mktemp("data") / "poems").out_dir


@pytest.fixture(scope="module")
def tuned_checkpoint(hf_dir: Path, poems_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`hellogpt tune --from DIR` on the poems for a few steps; the checkpoint it wrote."""
    if not _command_exists("tune"):
        pytest.skip("`hellogpt tune` is not registered yet")
    work = tmp_path_factory.mktemp("tune")
    settings = {
        "train.out_dir": str(work / "checkpoints"),
        "train.runs_dir": str(work / "runs"),
        "train.checkpoint_name": "poems_hugs",
        "train.batch_size": 2,
        "train.gradient_accumulation_steps": 1,
        "train.max_iters": 12,
        "train.eval_interval": 12,
        "train.eval_iters": 2,
        "train.log_interval": 5,
        "train.always_save_checkpoint": True,
        "optim.learning_rate": 5e-3,
        "optim.warmup_iters": 0,
        "optim.decay_lr": False,
        "system.device": "cpu",
        "system.dtype": "float32",
        "system.compile": False,
    }
    arguments = ["tune", "--from", str(hf_dir), "--data", str(poems_data)]
    for key, value in settings.items():
        arguments += ["--set", f"{key}={value}"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    checkpoint_path = work / "checkpoints" / "poems_hugs.pt"
    assert checkpoint_path.exists(), result.output
    return checkpoint_path


def _validation_loss(model: GPT, data_dir: Path) -> float:
    """Mean loss over the same 8 validation batches for every model compared."""
    from hellogpt.data.loader import open_dataset

    dataset = open_dataset(data_dir)
    rng = np.random.default_rng(0)
    losses = []
    with torch.no_grad():
        for _ in range(8):
            x, y = dataset.sample_batch("val", 4, BLOCK_SIZE, rng)
            _, loss = model.eval()(torch.from_numpy(x), torch.from_numpy(y))
            losses.append(loss.item())
    return float(np.mean(losses))


@pytest.mark.slow
@needs_tune
def test_tune_from_a_huggingface_directory_lowers_the_loss_on_poems(
    hf_dir: Path, poems_data: Path, tuned_checkpoint: Path
) -> None:
    from hellogpt.checkpoints.format import load_checkpoint
    from hellogpt.checkpoints.loading import model_from_checkpoint

    pretrained, _ = load_pretrained(str(hf_dir))
    payload = load_checkpoint(tuned_checkpoint)
    before = _validation_loss(pretrained, poems_data)
    after = _validation_loss(model_from_checkpoint(payload), poems_data)
    assert after < before - 1.0, (before, after)
    assert payload.origin == {"kind": "huggingface", "source": str(hf_dir.resolve())}
    assert payload.model_args.n_embd == 64 and payload.model_args.bias is True
    assert payload.tokenizer == {"kind": "gpt2"}


@pytest.mark.slow
@needs_tune
def test_tune_offline_without_cache_fails_in_one_line(tmp_path: Path, poems_data: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "NO_COLOR": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "hellogpt", "tune", "--from", "gpt2", "--data", str(poems_data),
         "--set", f"train.out_dir={tmp_path / 'checkpoints'}"],
        env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    error_lines = result.stderr.strip().splitlines()
    assert len(error_lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "cannot be reached" in error_lines[0] and "--from path/to/dir" in error_lines[0]


def _greedy_text(model: torch.nn.Module, prompt: str, new_tokens: int) -> str:
    """transformers' greedy continuation of `prompt` (GPT-2 ids), decoded with our GPT-2 tokenizer."""
    from hellogpt.data.tokenizer import gpt2_tokenizer

    tokenizer = gpt2_tokenizer()
    ids = torch.tensor([tokenizer.encode(prompt)])
    output = model.generate(
        ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new_tokens, pad_token_id=50256
    )
    return tokenizer.decode(output[0, ids.size(1) :].tolist())


def _hf_from_our_model(model: GPT, directory: Path) -> GPT2LMHeadModel:
    from hellogpt.export import export_checkpoint

    payload = {"model_args": model.config.to_dict(), "model": model.state_dict(), "tokenizer": {"kind": "gpt2"}}
    return GPT2LMHeadModel.from_pretrained(export_checkpoint(payload, directory)).eval()


@needs_chat
@pytest.mark.parametrize("flag", ["--from", "--gpt2base"])
def test_chat_from_a_huggingface_directory_continues_like_transformers(hf_dir: Path, flag: str) -> None:
    expected = _greedy_text(GPT2LMHeadModel.from_pretrained(hf_dir).eval(), "The river", 12)
    result = CliRunner().invoke(
        app, ["chat", flag, str(hf_dir), "--prompt", "The river", "--temperature", "0", "--max-new-tokens", "12", *FP32]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == expected.strip()


@pytest.mark.slow
@needs_chat
@needs_tune
def test_chat_on_a_checkpoint_tuned_from_huggingface_needs_no_extra_flag(tuned_checkpoint: Path, tmp_path: Path) -> None:
    from hellogpt.checkpoints.format import load_checkpoint
    from hellogpt.checkpoints.loading import model_from_checkpoint

    tuned = model_from_checkpoint(load_checkpoint(tuned_checkpoint))
    expected = _greedy_text(_hf_from_our_model(tuned, tmp_path / "exported"), "The river", 12)
    result = CliRunner().invoke(
        app,
        ["chat", "--checkpoint", str(tuned_checkpoint), "--prompt", "The river", "--temperature", "0",
         "--max-new-tokens", "12", *FP32],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == expected.strip()
