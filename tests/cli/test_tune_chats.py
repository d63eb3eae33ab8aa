"""`hellogpt tune --data CHATS.jsonl`: conversations are prepared on the fly with the tuned model's tokenizer and
block size into data/<stem>, reused while unchanged, and a folder holding another dataset is refused, not replaced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hellogpt.checkpoints.format import load_checkpoint
from hellogpt.config.schema import DEFAULT_VAL_FRACTION
from hellogpt.data.chat_prepare import prepare_chats_for_model
from hellogpt.data.chat_template import CHATML_TEMPLATE
from hellogpt.data.loader import open_dataset
from tests.chat_models import write_chat_checkpoint
from tests.cli.test_train import assert_one_line_error, invoke, sets_of
from tests.train.conftest import write_char_dataset

TUNE = sets_of([
    "train.max_iters=2", "train.eval_interval=2", "train.eval_iters=1", "train.batch_size=4",
    "train.gradient_accumulation_steps=1", "optim.warmup_iters=0", "optim.lr_decay_iters=2",
])


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The current folder, with a tiny char chat model (block 64) and chats.jsonl in its characters."""
    monkeypatch.chdir(tmp_path)
    write_chat_checkpoint(tmp_path / "chat.pt")
    records = [
        {"messages": [{"role": "user", "content": f"sound of the {animal}?"},
                      {"role": "assistant", "content": f"the {animal} says {animal[::-1]}."}]}
        for animal in ("cat", "dog", "owl", "bee") * 2
    ]
    (tmp_path / "chats.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    return tmp_path


def test_tune_prepares_a_jsonl_file_with_the_models_tokenizer_and_reuses_it(workdir: Path) -> None:
    result = invoke("tune", "--from", "chat.pt", "--data", "chats.jsonl", "--checkpoint", "a.pt", "--plain", *TUNE)
    assert result.exit_code == 0, result.output
    assert "prepared into data/chats" in result.output
    model, dataset = load_checkpoint(workdir / "chat.pt"), open_dataset(workdir / "data" / "chats")
    assert dataset.is_chat and dataset.tokenizer.description() == model.tokenizer
    assert json.loads((workdir / "data" / "chats" / "meta.json").read_text())["block_size"] == model.model_args.block_size
    tuned = load_checkpoint(workdir / "checkpoints" / "a.pt")
    assert tuned.step == 2 and tuned.chat_template == CHATML_TEMPLATE
    # The same file for the same model: the folder is used as it is; an edited file is prepared again.
    again = prepare_chats_for_model(workdir / "chats.jsonl", workdir / "data" / "chats", model.tokenizer, 64, DEFAULT_VAL_FRACTION)
    assert again.skipped
    with (workdir / "chats.jsonl").open("a") as chats:
        chats.write(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo."}]}))
    assert not prepare_chats_for_model(workdir / "chats.jsonl", workdir / "data" / "chats", model.tokenizer, 64, DEFAULT_VAL_FRACTION).skipped


def test_tune_refuses_to_prepare_chats_over_another_dataset(workdir: Path) -> None:
    write_char_dataset(workdir / "data" / "chats", "abc " * 1000)
    before = (workdir / "data" / "chats" / "meta.json").read_bytes()
    result = invoke("tune", "--from", "chat.pt", "--data", "chats.jsonl", *TUNE)
    assert_one_line_error(result, "data/chats holds another dataset")
    assert (workdir / "data" / "chats" / "meta.json").read_bytes() == before
