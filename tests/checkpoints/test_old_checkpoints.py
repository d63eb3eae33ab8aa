"""A checkpoint written before `model.arch` existed (tests/fixtures/checkpoints/gpt2-before-arch.pt, made by
hellogpt 0.1.0 at commit 9f2ae84) still loads as GPT-2, decodes the same tokens and logits, and resumes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hellogpt.checkpoints.format import load_checkpoint
from hellogpt.checkpoints.loading import model_from_checkpoint, tokenizer_from_checkpoint
from hellogpt.cli import app
from hellogpt.decode.stream import stream_tokens
from tests.train.conftest import shakespeare_text, write_char_dataset

FIXTURE = Path(__file__).parents[1] / "fixtures" / "checkpoints" / "gpt2-before-arch.pt"
# Recorded with the code that wrote the fixture: the next-token logits after "ROMEO:" and 20 greedy ids.
FIRST_LOGITS = [-0.15703675150871277, 0.058450087904930115, 0.018135294318199158, -0.01105102151632309, 0.016528796404600143]
GREEDY_IDS = [55] * 20
# The fixture's run: 1x16 char model on the first 20,000 characters, 4 steps.
SETTINGS = ["system.measure=off", "system.device=cpu", "train.max_iters=6"]


def test_a_checkpoint_from_before_arch_loads_as_gpt2_and_decodes_as_it_did() -> None:
    checkpoint = load_checkpoint(FIXTURE)
    assert checkpoint.model_args.arch == "gpt2" and "arch" not in torch.load(FIXTURE, weights_only=True)["model_args"]
    model = model_from_checkpoint(checkpoint)
    prompt = tokenizer_from_checkpoint(checkpoint).encode("ROMEO:")
    with torch.no_grad():
        logits = model(torch.tensor([prompt]))[0][0, -1, :5]
    torch.testing.assert_close(logits, torch.tensor(FIRST_LOGITS), rtol=0, atol=1e-6)
    ids = list(stream_tokens(model, prompt, max_new_tokens=20, temperature=0.0, vocab_size=model.config.vocab_size))
    assert ids == GREEDY_IDS


@pytest.mark.slow
def test_a_checkpoint_from_before_arch_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_char_dataset(tmp_path / "data" / "tiny", shakespeare_text(20000))
    (tmp_path / "checkpoints").mkdir()
    shutil.copy(FIXTURE, tmp_path / "checkpoints" / "old.pt")
    arguments = ["train", "--data", "data/tiny", "--checkpoint", "old.pt", "--resume", "--plain"]
    result = CliRunner().invoke(app, [*arguments, *[part for setting in SETTINGS for part in ("--set", setting)]])
    assert result.exit_code == 0, result.output
    resumed = load_checkpoint(tmp_path / "checkpoints" / "old.pt")
    assert resumed.step == 6 and resumed.model_args.arch == "gpt2"
