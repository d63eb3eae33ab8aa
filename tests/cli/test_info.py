"""`hellogpt info CHECKPOINT`: the report of a checkpoint, as a table or one JSON object, and bad files in one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from hellogpt.checkpoints.format import save_checkpoint
from hellogpt.cli import app
from hellogpt.cli.checkpoint_info import describe_checkpoint
from hellogpt.config.schema import RunConfig
from hellogpt.model.gpt import GPT
from tests.checkpoints.conftest import CHARS, TINY, tiny_checkpoint


def run_info(*args: str) -> Any:
    return CliRunner().invoke(app, ["info", *args])


def test_describe_reports_progress_shape_tokenizer_and_origin(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "tiny.pt", tiny_checkpoint())
    described = describe_checkpoint(tmp_path / "tiny.pt")
    assert described["step"] == 1 and described["best_val_loss"] == 2.6
    assert described["n_params"] == GPT(TINY).num_parameters()
    assert described["architecture"] == TINY.to_dict()
    assert described["tokenizer"] == {"kind": "char", "vocab_size": len(CHARS)}
    assert described["origin"]["kind"] == "checkpoint"
    assert described["size_bytes"] == (tmp_path / "tiny.pt").stat().st_size


def test_info_json_prints_the_checkpoint_as_one_object(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "tiny.pt", tiny_checkpoint())
    result = run_info(str(tmp_path / "tiny.pt"), "--json")
    assert result.exit_code == 0, result.output
    described = json.loads(result.output)
    assert (described["step"], described["train_loss"], described["val_loss"]) == (1, 2.5, 2.6)
    assert described["config"]["train"]["batch_size"] == RunConfig().train.batch_size


def test_info_on_a_corrupt_file_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    result = run_info(str(bad))
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert result.output.strip().count("\n") == 0 and "not a readable checkpoint" in result.output


def test_describe_says_whether_a_checkpoint_is_a_chat_model(tmp_path: Path) -> None:
    from tests.chat_models import CHARS as CHAT_CHARS, write_chat_checkpoint

    save_checkpoint(tmp_path / "tiny.pt", tiny_checkpoint())
    assert describe_checkpoint(tmp_path / "tiny.pt")["chat"] == "no template (a base model)"
    chat = describe_checkpoint(write_chat_checkpoint(tmp_path / "chat.pt"))
    assert chat["chat"] == "ChatML template (a chat model)"
    assert chat["tokenizer"] == {"kind": "char", "vocab_size": len(CHAT_CHARS) + 2,
                                 "special_tokens": ["<|im_start|>", "<|im_end|>"]}
