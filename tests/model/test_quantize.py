"""int8 weights: logits close to fp32, the same greedy text from a trained model, end to end in chat and eval,
and one-line refusals (training, a GPU, a half dtype, an unknown scheme)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

from hellogpt.decode.cache import BatchedKVCache
from hellogpt.checkpoints.format import Checkpoint, save_checkpoint
from hellogpt.cli import app
from hellogpt.data.tokenizer import CharTokenizer
from hellogpt.decode.stream import stream_tokens
from hellogpt.generate import prepare_int8_for_inference
from hellogpt.model.gpt import GPT, GPTConfig
from hellogpt.model.quantize import Int8Linear, quantize_int8
from tests.train.conftest import write_char_dataset

TEXT = "once upon a midnight dreary, while i pondered, weak and weary. " * 40
# Per-channel int8 weights with 7-bit dynamic activations: the logits of a random tiny model stay within
# this fraction of their own norm (measured 2.3%).
LOGITS_RELATIVE_TOLERANCE = 0.05


def tiny_config(vocab_size: int) -> GPTConfig:
    return GPTConfig(n_layer=2, n_head=4, n_embd=64, block_size=64, vocab_size=vocab_size, dropout=0.0, bias=True, arch="gpt2")


@pytest.fixture(scope="module")
def trained() -> tuple[GPT, CharTokenizer]:
    """A tiny char model fitted to TEXT in a few hundred plain AdamW steps (confident, as trained models are)."""
    tokenizer = CharTokenizer("".join(sorted(set(TEXT))))
    ids = torch.tensor(tokenizer.encode(TEXT))
    torch.manual_seed(0)
    model = GPT(tiny_config(tokenizer.vocab_size))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        starts = torch.randint(0, len(ids) - 65, (16,))
        batch = torch.stack([ids[start : start + 65] for start in starts])
        _, loss = model(batch[:, :-1], batch[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), tokenizer


def greedy(model: GPT, prompt: list[int], new_tokens: int) -> list[int]:
    vocab = model.config.vocab_size
    return list(stream_tokens(model, prompt, max_new_tokens=new_tokens, temperature=0.0, vocab_size=vocab))


def test_every_linear_layer_and_the_lm_head_become_int8_and_the_embedding_stays() -> None:
    model = quantize_int8(GPT(tiny_config(50)).eval())
    assert sum(isinstance(module, Int8Linear) for module in model.modules()) == 2 * 4 + 1
    assert not any(type(module) is nn.Linear for module in model.modules())
    assert model.lm_head.weight.dtype == torch.int8 and model.transformer.wte.weight.dtype == torch.float32


def test_int8_logits_are_close_to_fp32_with_and_without_the_cache() -> None:
    torch.manual_seed(0)
    plain = GPT(tiny_config(300)).eval()
    quantized = prepare_int8_for_inference(copy.deepcopy(plain), torch.device("cpu"))
    ids = torch.randint(0, 300, (2, 24))
    with torch.no_grad():
        expected, actual = plain(ids)[0], quantized(ids)[0]
    assert ((actual - expected).norm() / expected.norm()).item() < LOGITS_RELATIVE_TOLERANCE
    cache = BatchedKVCache(quantized, slots=1).sequences()
    incremental = quantized.next_token_logits(ids[:1, :8], cache)
    assert ((incremental - expected[:1, 7]).norm() / expected[:1, 7].norm()).item() < LOGITS_RELATIVE_TOLERANCE


def test_a_trained_model_gives_the_same_greedy_reply_with_int8_weights(trained: tuple[GPT, CharTokenizer]) -> None:
    model, tokenizer = trained
    prompt = tokenizer.encode("once upon a mid")
    quantized = prepare_int8_for_inference(copy.deepcopy(model), torch.device("cpu"))
    assert greedy(quantized, prompt, 40) == greedy(model, prompt, 40)


@pytest.fixture(scope="module")
def trained_checkpoint(trained: tuple[GPT, CharTokenizer], tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, tokenizer = trained
    path = tmp_path_factory.mktemp("int8") / "poe.pt"
    save_checkpoint(path, Checkpoint(model_args=model.config, model=model.state_dict(), tokenizer=tokenizer.description()))
    return path


def invoke(*arguments: str):
    return CliRunner().invoke(app, list(arguments))


def test_chat_with_int8_weights_replies_as_fp32_does(trained_checkpoint: Path) -> None:
    common = ["chat", "-k", str(trained_checkpoint), "--prompt", "once upon", "-t", "0", "--max-new-tokens", "30", "--device", "cpu"]
    fp32 = invoke(*common, "--set", "system.dtype=float32")
    int8 = invoke(*common, "--quantize", "int8")
    assert fp32.exit_code == 0 and int8.exit_code == 0, int8.output
    assert int8.stdout == fp32.stdout


def test_eval_with_int8_weights_scores_within_one_percent_of_fp32(trained_checkpoint: Path, tmp_path: Path) -> None:
    data = write_char_dataset(tmp_path / "data", TEXT)
    base = ["eval", str(trained_checkpoint), "--data", str(data), "--json", "--device", "cpu"]
    fp32 = invoke(*base, "--dtype", "float32")
    int8 = invoke(*base, "--quantize", "int8")
    assert fp32.exit_code == 0 and int8.exit_code == 0, int8.output
    fp32_loss, int8_loss = json.loads(fp32.stdout)[0]["val_loss"], json.loads(int8.stdout)[0]["val_loss"]
    # 1% of the loss, or 0.002 nats for a loss this close to 0 (the model has learned the text almost by heart).
    assert int8_loss == pytest.approx(fp32_loss, rel=0.01, abs=0.002)


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--quantize", "int4"], "--quantize int4: Input should be 'none' or 'int8'"),
        (["--quantize", "int8", "--set", "system.dtype=bfloat16"], "keeps activations in float32"),
    ],
)
def test_bad_quantize_settings_are_one_line_and_exit_code_2(trained_checkpoint: Path, arguments: list[str], expected: str) -> None:
    result = invoke("chat", "-k", str(trained_checkpoint), "--prompt", "a", "--device", "cpu", *arguments)
    assert result.exit_code == 2
    assert expected in result.output and len(result.output.strip().splitlines()) == 1


def test_int8_on_a_gpu_is_refused_in_one_line(trained_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hellogpt.hardware import devices

    monkeypatch.setattr(devices, "choose_device", lambda setting: torch.device("cuda"))
    result = invoke("chat", "-k", str(trained_checkpoint), "--prompt", "a", "--quantize", "int8")
    assert result.exit_code == 2 and "runs on the CPU only" in result.output
