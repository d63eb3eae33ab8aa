"""Bad input to `hellogpt chat` and its REPL: one clear line, exit code 2 from scripts, and a session that goes on.

Sampling settings at the edges of what the schema accepts (a temperature of 1e-40 or infinity) are not bad
input: they must work, as greedy and as uniform draws.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hellogpt.decode import stream
from hellogpt.chat import run_repl
from hellogpt.cli import app
from hellogpt.data.tokenizer import CharTokenizer, gpt2_tokenizer
from hellogpt.model.gpt import GPT, GPTConfig
from tests.cli.test_chat import CHARS, FP32, write_checkpoint
from tests.test_chat import RecordingView, make_session, scripted_input
from tests.test_generate import make_model

SEED_RANGE = "0 to 2**63-1"


def chat(*args: str):
    return CliRunner().invoke(app, ["chat", *args])


def assert_one_error_line(result, expected: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], result.stderr
    assert "Traceback" not in result.output


@pytest.fixture()
def tiny(tmp_path: Path) -> Path:
    tokenizer = CharTokenizer(CHARS)
    model = make_model(block_size=32, vocab_size=tokenizer.vocab_size)
    return write_checkpoint(tmp_path / "tiny.pt", model, tokenizer, max_new_tokens=7)


@pytest.mark.parametrize(
    "args", [["--seed", "-1"], ["--seed", "99999999999999999999999"], ["--set", "sample.seed=18446744073709551616"]]
)
def test_a_seed_out_of_range_is_one_line_naming_the_range(args: list[str], tiny: Path) -> None:
    assert_one_error_line(chat("-k", str(tiny), "--prompt", "a", *args, *FP32), SEED_RANGE)


def test_train_refuses_a_negative_seed_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["train", "--set", "train.seed=-1"])
    assert_one_error_line(result, f"train.seed: -1 is not a seed: use a whole number from {SEED_RANGE}")


def test_float16_on_the_cpu_is_one_line(tiny: Path) -> None:
    result = chat("-k", str(tiny), "--prompt", "a", "--device", "cpu", "--set", "system.dtype=float16")
    assert_one_error_line(result, "float16 is for GPUs")


@pytest.mark.parametrize("temperature", ["1e-40", "1e-300"])
def test_a_temperature_near_zero_completes_like_greedy(temperature: str, tiny: Path) -> None:
    greedy = chat("-k", str(tiny), "--prompt", "the raven", "-t", "0", *FP32)
    result = chat("-k", str(tiny), "--prompt", "the raven", "-t", temperature, "--set", "sample.top_k=null", *FP32)
    assert result.exit_code == 0, result.output
    assert result.stdout == greedy.stdout


@pytest.mark.parametrize("temperature", ["1e300", "inf"])
def test_a_huge_temperature_completes(temperature: str, tiny: Path) -> None:
    result = chat("-k", str(tiny), "--prompt", "the raven", "-t", temperature, "--seed", "1", *FP32)
    assert result.exit_code == 0, result.output
    assert len(result.stdout) == 7 + 1


def padded_gpt2_model() -> GPT:
    """A one-layer model with GPT-2's padded vocabulary (50304 over 50257) whose padding ids score highest."""
    tokenizer_size = gpt2_tokenizer().vocab_size
    model = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=16, vocab_size=50304, bias=True, dropout=0.0, arch="gpt2"))
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()  # the final hidden state is the bias, all ones...
        model.transformer.ln_f.bias.fill_(1.0)
        model.lm_head.weight.zero_()  # ...so each logit is its (tied) embedding row's sum
        model.lm_head.weight[tokenizer_size:] = 100.0
    return model


@pytest.mark.parametrize("temperature", ["0", "5"])
def test_a_padded_vocabulary_only_ever_yields_ids_the_tokenizer_decodes(temperature: str, tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path / "padded.pt", padded_gpt2_model(), gpt2_tokenizer())
    result = chat("-k", str(path), "--prompt", "hi", "-t", temperature, "--set", "sample.top_k=null",
                  "--max-new-tokens", "20", "--seed", "0", *FP32)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() and "Traceback" not in result.output


def test_a_model_with_nan_weights_is_one_line(tmp_path: Path) -> None:
    tokenizer = CharTokenizer(CHARS)
    model = make_model(block_size=32, vocab_size=tokenizer.vocab_size)
    with torch.no_grad():
        model.lm_head.weight.fill_(float("nan"))
    path = write_checkpoint(tmp_path / "diverged.pt", model, tokenizer)
    result = chat("-k", str(path), "--prompt", "the raven", *FP32)
    assert_one_error_line(result, "NaN or infinite")
    assert result.stdout == ""


def test_an_unexpected_failure_mid_reply_is_one_line_after_the_partial_completion(
    tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def out_of_memory(*args: object) -> torch.Tensor:
        raise RuntimeError("out of memory\nwhile decoding")

    monkeypatch.setattr(stream, "decode_step", out_of_memory)
    result = chat("-k", str(tiny), "--prompt", "the raven", "-t", "0", *FP32)
    assert_one_error_line(result, "error: the reply failed (RuntimeError: out of memory while decoding)")
    assert len(result.stdout) == 1 + 1  # the one token made before the failure, and the end of its line


def failing_next(model: GPT, failures: int, make_failure):
    """Make the first `failures` forward passes of `model` fail (raise or return what `make_failure` gives)."""
    original = model.next_token_logits
    calls = {"count": 0}

    def next_token_logits(ids: torch.Tensor, cache) -> torch.Tensor:
        calls["count"] += 1
        if calls["count"] > failures:
            return original(ids, cache)
        return make_failure(original(ids, cache))

    model.next_token_logits = next_token_logits  # type: ignore[method-assign]


def errors(view: RecordingView) -> list[str]:
    return [str(value) for kind, value in view.events if kind == "error"]


def test_a_reply_that_fails_ends_its_turn_with_one_error_and_the_session_goes_on() -> None:
    session = make_session()
    "".join(session.respond("before"))

    def crash(logits: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    failing_next(session.model, failures=1, make_failure=crash)
    view = RecordingView()
    assert run_repl(session, scripted_input("the raven", "again"), view) == "end of input"
    assert errors(view) == ["the reply failed (RuntimeError: CUDA error: an illegal memory access was encountered)"]
    assert [turn.prompt for turn in session.history] == ["before", "again"]


def test_nan_scores_end_the_turn_with_their_message_and_the_session_goes_on() -> None:
    session = make_session()
    failing_next(session.model, failures=1, make_failure=lambda logits: logits * float("nan"))
    view = RecordingView()
    run_repl(session, scripted_input("the raven", "again"), view)
    assert len(errors(view)) == 1 and errors(view)[0].startswith("the model's next-token scores are NaN")
    assert [turn.prompt for turn in session.history] == ["again"]


def test_a_temperature_near_zero_replies_like_greedy_in_the_repl() -> None:
    greedy = make_session(temperature=0.0)
    expected = "".join(greedy.respond("the raven"))
    session = make_session()
    view = RecordingView()
    run_repl(session, scripted_input("/set temperature 1e-40", "/set top_k none", "the raven"), view)
    assert errors(view) == [] and session.history[-1].reply == expected


@pytest.mark.parametrize("seed", ["99999999999999999999999", "-1"])
def test_set_seed_out_of_range_is_refused_with_the_range(seed: str) -> None:
    session = make_session(seed=3)
    view = RecordingView()
    run_repl(session, scripted_input(f"/set seed {seed}", "the raven"), view)
    assert SEED_RANGE in view.messages()[0] and "Value error" not in view.messages()[0]
    assert session.settings.seed == 3 and [turn.prompt for turn in session.history] == ["the raven"]


def test_a_command_that_fails_unexpectedly_is_one_error_and_the_session_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_write(path: Path, text: str) -> None:
        raise ValueError("a file system that says no")

    monkeypatch.setattr("hellogpt.chat.write_text_atomically", broken_write)
    session = make_session()
    view = RecordingView()
    run_repl(session, scripted_input(f"/save {tmp_path / 'chat.md'}", "the raven"), view)
    assert errors(view) == ["/save failed (ValueError: a file system that says no)"]
    assert [turn.prompt for turn in session.history] == ["the raven"]
