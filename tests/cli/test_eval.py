"""`hellogpt eval` end to end: checkpoints and Hugging Face models, char and BPE data, table and JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel
from typer.testing import CliRunner

from hellogpt.checkpoints.format import Checkpoint, save_checkpoint
from hellogpt.cli import app
from hellogpt.data.loader import open_dataset
from tests.test_evaluate import TEXT, WINDOW, uniform_model
from tests.train.conftest import write_char_dataset

BPE_TEXT = "Once upon a midnight dreary, while I pondered, weak and weary,\n" * 40


def invoke(*arguments: str):
    return CliRunner().invoke(app, list(arguments))


@pytest.fixture(scope="module")
def char_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_char_dataset(tmp_path_factory.mktemp("chars") / "chars", TEXT)


@pytest.fixture(scope="module")
def bpe_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hellogpt.data.prepare import prepare_dataset

    folder = tmp_path_factory.mktemp("bpe")
    (folder / "raven.txt").write_text(BPE_TEXT, encoding="utf-8")
    return prepare_dataset([str(folder / "raven.txt")], folder / "data", val_fraction=0.25).out_dir


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny-gpt2")
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=32, n_positions=16)).save_pretrained(directory)
    return directory


def char_checkpoint(path: Path, data_dir: Path, uniform: bool) -> Path:
    tokenizer = open_dataset(data_dir).tokenizer
    torch.manual_seed(1)
    model = uniform_model(tokenizer.vocab_size)
    if not uniform:
        model.transformer.ln_f.weight.data.fill_(1.0)
    save_checkpoint(path, Checkpoint(model_args=model.config, model=model.state_dict(), tokenizer=tokenizer.description()))
    return path


def test_eval_of_char_checkpoints_is_a_json_list_in_the_order_given(char_data: Path, tmp_path: Path) -> None:
    uniform = char_checkpoint(tmp_path / "uniform.pt", char_data, uniform=True)
    random = char_checkpoint(tmp_path / "random.pt", char_data, uniform=False)
    result = invoke("eval", str(random), str(uniform), "--data", str(char_data), "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [row["target"] for row in rows] == [str(random), str(uniform)]
    assert {"target", "val_loss", "perplexity", "bits_per_byte", "tokens"} <= set(rows[0])
    vocab = open_dataset(char_data).tokenizer.vocab_size
    assert rows[1]["val_loss"] == pytest.approx(math.log(vocab), abs=1e-6)
    assert rows[0]["tokens"] == rows[1]["tokens"] and rows[0]["tokens"] % WINDOW == 0


def test_eval_of_a_hugging_face_model_on_bpe_data_prints_a_table(bpe_data: Path, hf_dir: Path) -> None:
    result = invoke("eval", "--from", str(hf_dir), "--data", str(bpe_data), "--iters", "1", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "windows of 16 tokens" in result.output and "bits/byte" in result.output
    as_json = invoke("eval", "--from", str(hf_dir), "--data", str(bpe_data), "--iters", "1", "--device", "cpu", "--json")
    (row,) = json.loads(as_json.output)
    assert abs(row["val_loss"] - math.log(50257)) < 1.0  # a random GPT-2 is close to uniform
    assert f"{row['val_loss']:.4f}" in result.output


def test_eval_on_the_train_split_names_its_loss(bpe_data: Path, hf_dir: Path) -> None:
    result = invoke("eval", str(hf_dir), "--data", str(bpe_data), "--split", "train", "--iters", "1", "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    assert row["split"] == "train" and "train_loss" in row and row["tokens"] == 8 * 16


def test_a_model_with_another_tokenizer_than_the_data_is_one_line(bpe_data: Path, char_data: Path, tmp_path: Path) -> None:
    checkpoint = char_checkpoint(tmp_path / "chars.pt", char_data, uniform=True)
    result = invoke("eval", str(checkpoint), "--data", str(bpe_data))
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output
    assert f"{checkpoint} was trained with the char tokenizer, {bpe_data} with gpt2" in errors[0]
    assert "--tokenizer char" in errors[0]
