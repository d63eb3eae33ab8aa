"""`hellogpt chat` from scripts: --prompt and stdin modes, sample settings, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hellogpt.cli import app
from hellogpt.config.schema import RunConfig
from hellogpt.data.tokenizer import CharTokenizer
from hellogpt.generate import stream_tokens
from hellogpt.train.checkpoint import save_checkpoint
from tests.test_generate import make_model

CHARS = "\n !',.?abcdefghijklmnopqrstuvwxyz"
FP32 = ["--set", "system.dtype=float32", "--device", "cpu"]


@pytest.fixture()
def checkpoint(tmp_path: Path) -> Path:
    """A tiny char-level checkpoint in the contract-3 format whose config asks for 7 new tokens."""
    tokenizer = CharTokenizer(CHARS)
    model = make_model(block_size=32, vocab_size=tokenizer.vocab_size)
    config = RunConfig().model_dump(mode="json")
    config["sample"].update(max_new_tokens=7, temperature=0.8, top_k=5)
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, {
        "model_args": model.config.to_dict(), "model": model.state_dict(), "optimizer": None, "scaler": None,
        "step": 10, "train_loss": 2.5, "val_loss": 2.6, "best_val_loss": 2.6, "config": config,
        "tokenizer": tokenizer.description(), "rng": None, "sampler": None, "origin": {"kind": "scratch"},
        "run_name": "tiny",
    })
    return path


def greedy_completion(prompt: str, new_tokens: int) -> str:
    tokenizer = CharTokenizer(CHARS)
    model = make_model(block_size=32, vocab_size=tokenizer.vocab_size)
    ids = stream_tokens(model, tokenizer.encode(prompt), max_new_tokens=new_tokens, temperature=0.0)
    return tokenizer.decode(list(ids))


def run(*args: str, stdin: str | None = None):
    return CliRunner().invoke(app, ["chat", *args], input=stdin)


def test_prompt_mode_prints_only_the_completion(checkpoint: Path) -> None:
    result = run("--checkpoint", str(checkpoint), "--prompt", "the raven", "--temperature", "0", *FP32)
    assert result.exit_code == 0, result.output
    assert result.stdout == greedy_completion("the raven", 7) + "\n"


def test_the_prompt_can_come_from_stdin(checkpoint: Path) -> None:
    result = run("-k", str(checkpoint), "-t", "0", "--max-new-tokens", "9", *FP32, stdin="the raven\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == greedy_completion("the raven", 9) + "\n"


def test_a_seed_reproduces_the_samples_which_are_separated(checkpoint: Path) -> None:
    args = ("-k", str(checkpoint), "--prompt", "quoth", "--seed", "4", "-n", "3", *FP32)
    first, second = run(*args), run(*args)
    assert first.exit_code == 0, first.output
    assert first.stdout == second.stdout
    assert len(first.stdout.split("\n---\n")) == 3


def test_flags_override_set_which_overrides_the_checkpoints_sample_section(checkpoint: Path) -> None:
    from_checkpoint = run("-k", str(checkpoint), "--prompt", "a", "-t", "0", *FP32)
    from_set = run("-k", str(checkpoint), "--prompt", "a", "-t", "0", "--set", "sample.max_new_tokens=3", *FP32)
    from_flag = run("-k", str(checkpoint), "--prompt", "a", "-t", "0", "--set", "sample.max_new_tokens=3",
                    "--max-new-tokens", "5", *FP32)
    assert [len(result.stdout) - 1 for result in (from_checkpoint, from_set, from_flag)] == [7, 3, 5]


def test_a_prompt_longer_than_the_context_is_noticed_on_stderr(checkpoint: Path) -> None:
    result = run("-k", str(checkpoint), "--prompt", "a" * 50, "-t", "0", *FP32)
    assert result.exit_code == 0
    assert result.stderr.count("most recent") == 1 and "most recent" not in result.stdout
    assert result.stdout == greedy_completion("a" * 32, 7) + "\n"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--checkpoint", "nowhere/missing.pt", "--prompt", "x"], "missing.pt"),
        (["--prompt", "x"], "--checkpoint"),
        (["--checkpoint", "a.pt", "--from", "gpt2", "--prompt", "x"], "not both"),
        (["--checkpoint", "CORRUPT", "--prompt", "x"], "corrupt"),
        (["--checkpoint", "TINY", "--prompt", "x", "--top-k", "0"], "--top-k 0: input should be greater than 0"),
        (["--checkpoint", "TINY", "--prompt", "x", "--set", "sample.top_p=2"], "sample.top_p"),
    ],
)
def test_errors_are_one_line_and_exit_code_2(args: list[str], expected: str, tmp_path: Path, checkpoint: Path) -> None:
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    args = [str(corrupt) if arg == "CORRUPT" else str(checkpoint) if arg == "TINY" else arg for arg in args]
    result = run(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and expected.lower() in lines[0].lower()
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_hugging_face_directory_chats_through_from(tmp_path: Path) -> None:
    pytest.importorskip("hellogpt.model.hf")
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=64)).save_pretrained(tmp_path / "hf")
    for flag in ("--from", "--gpt2base"):
        result = run(flag, str(tmp_path / "hf"), "--prompt", "Hello", "--max-new-tokens", "5", "-t", "0", *FP32)
        assert result.exit_code == 0, result.output
        assert result.stdout.endswith("\n") and result.stdout.strip()
