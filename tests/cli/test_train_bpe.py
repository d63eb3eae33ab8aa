"""`train` prepares its source with a BPE trained on it when `data.tokenizer` says bpe:N."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from hellogpt.checkpoints.format import load_checkpoint
from hellogpt.cli import app
from tests.train.conftest import TINY_SETTINGS, shakespeare_text


def _sets(*assignments: str) -> list[str]:
    return [argument for assignment in assignments for argument in ("--set", assignment)]


@pytest.mark.slow
def test_train_prepares_its_source_with_a_trained_bpe_and_the_checkpoint_carries_it(tmp_path: Path) -> None:
    source = tmp_path / "shakespeare.txt"
    source.write_text(shakespeare_text())
    data_dir = tmp_path / "data" / "shakespeare"
    arguments = _sets(
        *TINY_SETTINGS, f"data.source={source}", f"data.dataset={data_dir}", "data.tokenizer=bpe:320",
        "train.max_iters=2", "train.eval_interval=2",
    )
    result = CliRunner().invoke(app, ["train", "--checkpoint", str(tmp_path / "bpe.pt"), "--plain", *arguments])
    assert result.exit_code == 0, result.output
    assert (data_dir / "tokenizer.json").is_file()
    checkpoint = load_checkpoint(tmp_path / "bpe.pt")
    assert checkpoint.tokenizer["kind"] == "bpe" and checkpoint.model_args.vocab_size <= 320


def test_a_bad_bpe_size_in_the_config_is_one_line() -> None:
    result = CliRunner().invoke(app, ["train", "--set", "data.tokenizer=bpe:7", "--plain"])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output
    assert "bpe:N" in errors[0] and "data.tokenizer" in errors[0]
