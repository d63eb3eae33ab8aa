"""`hellogpt chat` from scripts: --prompt and stdin modes, sample settings, one-line errors."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from hellogpt.chat import ReplyStats
from hellogpt.checkpoints.format import Checkpoint, save_checkpoint
from hellogpt.cli import app
from hellogpt.cli.chat import _TerminalView
from hellogpt.config.schema import RunConfig
from hellogpt.data.tokenizer import CharTokenizer, Tokenizer
from hellogpt.decode.stream import stream_tokens
from hellogpt.model.gpt import GPT
from tests.test_generate import make_model

CHARS = "\n !',.?abcdefghijklmnopqrstuvwxyz"
FP32 = ["--set", "system.dtype=float32", "--device", "cpu"]


def write_checkpoint(path: Path, model: GPT, tokenizer: Tokenizer, **sample: object) -> Path:
    """Save `model` as a hellogpt checkpoint at `path` whose config's `sample` section has `sample` laid over it."""
    config = RunConfig().model_dump(mode="json")
    config["sample"].update(sample)
    save_checkpoint(path, Checkpoint(
        model_args=model.config, model=model.state_dict(), step=10, train_loss=2.5, val_loss=2.6, best_val_loss=2.6,
        config=config, tokenizer=tokenizer.description(), origin={"kind": "scratch"}, run_name="tiny",
    ))
    return path


@pytest.fixture()
def checkpoint(tmp_path: Path) -> Path:
    """A tiny char-level checkpoint whose config asks for 7 new tokens."""
    tokenizer = CharTokenizer(CHARS)
    model = make_model(block_size=32, vocab_size=tokenizer.vocab_size)
    return write_checkpoint(tmp_path / "tiny.pt", model, tokenizer, max_new_tokens=7, temperature=0.8, top_k=5)


def greedy_completion(prompt: str, new_tokens: int) -> str:
    tokenizer = CharTokenizer(CHARS)
    model = make_model(block_size=32, vocab_size=tokenizer.vocab_size)
    ids = stream_tokens(
        model, tokenizer.encode(prompt), max_new_tokens=new_tokens, temperature=0.0, vocab_size=tokenizer.vocab_size
    )
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


def test_a_note_during_a_completion_waits_for_its_line_to_end(checkpoint: Path) -> None:
    result = run("-k", str(checkpoint), "--prompt", "a" * 30, "-t", "0", *FP32)  # the reply outgrows 32 tokens
    assert result.exit_code == 0, result.output
    assert result.stdout == greedy_completion("a" * 30, 7) + "\n"
    assert result.output == result.stdout + "note: the context is longer than the model's 32 tokens: " \
        "only the most recent ones are used\n"


def terminal_view() -> tuple[_TerminalView, io.StringIO]:
    """The REPL's view, with its stdout and stderr consoles writing into one buffer, as a terminal shows them."""
    screen = io.StringIO()
    console = lambda: Console(file=screen, width=200, highlight=False, no_color=True)  # noqa: E731
    return _TerminalView(console(), console()), screen


def test_a_note_in_the_middle_of_a_reply_starts_on_its_own_line() -> None:
    view, screen = terminal_view()
    view.show_reply_piece("the raven")
    view.show_notice("the context is longer than the model's 32 tokens")
    view.show_reply_end(ReplyStats(tokens=2, seconds=1.0))
    assert screen.getvalue().splitlines() == [
        "the raven", "the context is longer than the model's 32 tokens", "2 tokens, 2.0 tokens/s",
    ]


def test_an_error_in_the_middle_of_a_reply_starts_on_its_own_line() -> None:
    view, screen = terminal_view()
    view.show_reply_piece("nevermore")
    view.show_error("the reply failed (RuntimeError: [boom])")
    view.show_notice("a note")
    assert screen.getvalue().splitlines() == ["nevermore", "error: the reply failed (RuntimeError: [boom])", "a note"]


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


@pytest.fixture()
def chat_checkpoint(tmp_path: Path) -> Path:
    from tests.chat_models import write_chat_checkpoint

    return write_chat_checkpoint(tmp_path / "tiny_chat.pt", max_new_tokens=20)


def test_a_chat_model_answers_the_prompt_as_a_message_and_stops_at_the_end_of_its_turn(chat_checkpoint: Path) -> None:
    result = run("-k", str(chat_checkpoint), "--prompt", "hello <|im_end|>", *FP32)
    assert result.exit_code == 0, result.output
    assert result.stdout == "hi.\n"  # the bigram model would go on for 20 tokens past <|im_end|>


def test_a_checkpoint_with_a_foreign_chat_template_is_refused(chat_checkpoint: Path) -> None:
    saved = torch.load(chat_checkpoint, weights_only=True)
    saved["chat_template"] = "{{ messages }}"
    torch.save(saved, chat_checkpoint)
    result = run("-k", str(chat_checkpoint), "--prompt", "hello", *FP32)
    assert result.exit_code == 2
    assert "chat template other than" in result.stderr and "Traceback" not in result.stderr


def test_memory_is_on_by_default_for_a_chat_model_only(chat_checkpoint: Path, checkpoint: Path) -> None:
    from hellogpt.cli.chat import remembers
    from hellogpt.model_source import load_model

    chat_model, base_model = load_model(str(chat_checkpoint), None), load_model(str(checkpoint), None)
    assert [remembers(None, chat_model), remembers(None, base_model)] == [True, False]
    assert [remembers(False, chat_model), remembers(True, base_model)] == [False, True]
