"""Chat datasets: conversations rendered into ids, a loss mask and rows; split by conversation; cut at turn starts;
batches whose lines never mix conversations and whose targets are -1 where nothing is trained."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hellogpt.data.chat_template import TURN_END, TURN_START
from hellogpt.data.chats import turn_rows
from hellogpt.data.loader import open_dataset
from hellogpt.data.prepare import prepare_dataset
from hellogpt.data.pydoc_chat import conversations as pydoc_conversations

QUESTIONS = [f"What is {word}?" for word in ("red", "blue", "green", "gold", "gray", "pink", "teal", "navy")]


def _conversation(index: int, turns: int = 1, system: bool = False) -> dict:
    messages = [{"role": "system", "content": "Be brief."}] if system else []
    for turn in range(turns):
        messages += [
            {"role": "user", "content": QUESTIONS[(index + turn) % len(QUESTIONS)]},
            {"role": "assistant", "content": f"A colour, number {index}.{turn}."},
        ]
    return {"messages": messages}


RECORDS = [_conversation(index, turns=3 if index % 5 == 0 else 1, system=index % 2 == 0) for index in range(20)]


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twenty conversations, a few of three turns (too long for a block of 80), prepared with the char tokenizer."""
    folder = tmp_path_factory.mktemp("chats")
    lines = [json.dumps(record) for record in RECORDS]
    (folder / "chats.jsonl").write_text("\n".join(lines) + "\n")
    prepare_dataset([str(folder / "chats.jsonl")], folder / "data", tokenizer="char", val_fraction=0.2, block_size=80)
    return folder / "data"


def test_prepare_writes_ids_masks_and_rows_per_split_and_counts_the_conversations(chat_dir: Path) -> None:
    names = sorted(path.name for path in chat_dir.iterdir())
    assert names == [
        "meta.json", "train.bin", "train.mask.bin", "train.rows.bin", "val.bin", "val.mask.bin", "val.rows.bin"
    ]
    meta = json.loads((chat_dir / "meta.json").read_text())
    assert meta["format"] == "chat" and meta["conversations"] == {"train": 16, "val": 4}
    assert meta["turns"] == sum(len(record["messages"]) for record in RECORDS)
    assert meta["cut_conversations"] == 4 and 0 < meta["trained_tokens"] < meta["train_tokens"] + meta["val_tokens"]
    assert meta["tokenizer"]["special_tokens"] == [TURN_START, TURN_END]


def test_every_row_starts_a_turn_fits_the_block_and_has_a_trained_target(chat_dir: Path) -> None:
    dataset = open_dataset(chat_dir)
    start_id = dataset.tokenizer.special_tokens[TURN_START]
    for split in ("train", "val"):
        starts, ends = dataset._row_bounds(split)
        tokens, mask = dataset.tokens(split), dataset._mask(split)
        for start, end in zip(starts, ends):
            assert tokens[start] == start_id and end - start <= 81
            assert mask[start + 1 : end].any()


def test_no_conversation_is_in_both_splits(chat_dir: Path) -> None:
    dataset = open_dataset(chat_dir)
    texts = {split: dataset.tokenizer.decode(dataset.tokens(split)) for split in ("train", "val")}
    for number in range(20):
        where = [split for split in texts if f"number {number}.0." in texts[split]]
        assert len(where) == 1, (number, where)


def test_batch_lines_are_single_rows_with_untrained_targets_set_to_minus_one(chat_dir: Path) -> None:
    dataset = open_dataset(chat_dir)
    inputs, targets = dataset.sample_batch("train", 8, 80, np.random.default_rng(0))
    assert inputs.shape == targets.shape and inputs.shape[0] == 8 and inputs.shape[1] <= 80
    tokenizer = dataset.tokenizer
    start_id, end_id = tokenizer.special_tokens[TURN_START], tokenizer.special_tokens[TURN_END]
    for line_inputs, line_targets in zip(inputs, targets):
        trained = line_targets[line_targets >= 0]
        assert line_inputs[0] == start_id and (line_inputs[1:] != start_id).sum() >= 1
        # Only replies are trained: each trained stretch ends with the end of its turn, never a question.
        text = tokenizer.decode(trained)
        assert "What is" not in text and text.endswith(TURN_END) and trained[-1] == end_id
        # One row per line: after the row the line is padding, every target -1.
        length = int(np.flatnonzero(line_targets >= 0).max()) + 1
        assert (line_targets[length:] == -1).all()


def test_a_long_conversation_is_cut_at_turn_starts_and_a_turn_longer_than_the_block_hard() -> None:
    ids = [9, 1, 1, 9, 1, 2, 2, 9, 1, 2, 2, 2, 2, 2, 2]
    mask = [False, False, False, False, False, True, True, False, False, True, True, True, True, True, True]
    assert turn_rows(ids, mask, turn_start_id=9, max_row=5) == [(3, 7), (7, 12), (12, 15)]


def test_the_builtin_set_is_deterministic_and_prepares_from_the_command_line(tmp_path: Path) -> None:
    first, second = list(pydoc_conversations()), list(pydoc_conversations())
    assert first == second and len(first) > 200
    assert all(message["content"] for conversation in first for message in conversation)
    result = prepare_dataset(["builtin:pydoc-chat"], tmp_path / "chat", tokenizer="char", block_size=128)
    assert result.meta["conversations"]["val"] > 0 and result.meta["dropped_rows"] == 0


def test_a_trained_bpe_learns_from_the_training_conversations_and_gets_the_markers(tmp_path: Path) -> None:
    source = tmp_path / "chats.jsonl"
    source.write_text("\n".join(json.dumps(record) for record in RECORDS) + "\n")
    result = prepare_dataset([str(source)], tmp_path / "bpe", tokenizer="bpe:300", block_size=80)
    dataset = open_dataset(tmp_path / "bpe")
    assert (tmp_path / "bpe" / "tokenizer.json").is_file() and result.meta["format"] == "chat"
    assert set(dataset.tokenizer.special_tokens) >= {TURN_START, TURN_END}
    assert dataset.tokens("train")[0] == dataset.tokenizer.special_tokens[TURN_START]


def test_info_describes_the_validation_split_in_conversations(chat_dir: Path) -> None:
    from hellogpt.data.loader import describe_dataset

    described = describe_dataset(chat_dir)
    assert described["format"] == "chat" and described["validation"] == "4 whole conversation(s), asked for 0.2 of them"
