"""`hellogpt export`: our checkpoints become directories transformers loads, errors are one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, GPT2LMHeadModel
from typer.testing import CliRunner

from hellogpt.checkpoints.format import Checkpoint, load_checkpoint, save_checkpoint
from hellogpt.cli import app
from hellogpt.model.gpt import GPT, GPTConfig
from tests.model.test_hf import GPT2_VOCAB, our_logits, random_ids, tiny_payload


def as_checkpoint(payload: dict, **fields: object) -> Checkpoint:
    """tests.model.test_hf's payload dicts as the checkpoints `hellogpt export` reads."""
    return Checkpoint(
        model_args=GPTConfig(**payload["model_args"]), model=payload["model"], tokenizer=payload["tokenizer"], **fields
    )


@pytest.mark.slow
def test_trained_checkpoint_survives_the_export_command(tmp_path: Path) -> None:
    payload = tiny_payload()
    model = GPT(GPTConfig(**payload["model_args"]))
    model.load_state_dict(payload["model"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    batch = random_ids(33, batch=4, seed=5)
    for _ in range(5):
        _, loss = model(batch[:, :-1], batch[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    checkpoint_path = tmp_path / "trained.pt"
    trained = as_checkpoint({**payload, "model": model.state_dict()}, step=5, origin={"kind": "scratch"})
    save_checkpoint(checkpoint_path, trained)

    result = CliRunner().invoke(app, ["export", str(checkpoint_path), str(tmp_path / "exported")])
    assert result.exit_code == 0, result.output
    assert "exported" in result.output

    hf_model = GPT2LMHeadModel.from_pretrained(tmp_path / "exported").eval()
    ids = random_ids(50, seed=6)
    with torch.no_grad():
        theirs = hf_model(ids).logits
    ours = our_logits(load_checkpoint(checkpoint_path).to_payload(), ids)[..., :GPT2_VOCAB]
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)


def test_export_command_refuses_an_existing_directory_in_one_line(tmp_path: Path) -> None:
    checkpoint_path = tmp_path / "tiny.pt"
    save_checkpoint(checkpoint_path, as_checkpoint(tiny_payload()))
    (tmp_path / "exported").mkdir()
    result = CliRunner().invoke(app, ["export", str(checkpoint_path), str(tmp_path / "exported")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: {tmp_path / 'exported'} already exists: choose another directory or pass --force to replace it"
    ]


def test_export_command_gives_a_char_model_a_tokenizer_that_auto_tokenizer_loads(tmp_path: Path) -> None:
    checkpoint_path = tmp_path / "shakespeare_char.pt"
    chars = "".join(map(chr, range(32, 97)))
    save_checkpoint(
        checkpoint_path, as_checkpoint(tiny_payload(vocab_size=len(chars), tokenizer={"kind": "char", "chars": chars}))
    )
    result = CliRunner().invoke(app, ["export", str(checkpoint_path), str(tmp_path / "exported")])
    assert result.exit_code == 0, result.output
    assert "AutoModelForCausalLM.from_pretrained" in result.output
    assert f"hellogpt chat --from {tmp_path / 'exported'}" in result.output  # it reads the char table back
    assert (tmp_path / "exported" / "model.safetensors").exists()
    assert AutoTokenizer.from_pretrained(tmp_path / "exported")("ABC")["input_ids"] == [33, 34, 35]
