"""Conversations that `prepare` cannot use: one error line naming the file and the line, exit 2, and nothing
written (the output folder is not even created)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bad_input.test_disk_full import assert_one_error_line, invoke

GOOD = json.dumps({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]})


@pytest.mark.parametrize(
    ("second_line", "fragments"),
    [
        (b"{not json", ("chats.jsonl:2:", "not JSON")),
        (b'{"conversation": []}', ("chats.jsonl:2:", 'no "messages" list')),
        (b'{"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y"}]}',
         ("chats.jsonl:2:", "message 1 has the unknown role 'bot'", "system, user, assistant")),
        (b'{"messages": [{"role": "user", "content": "Only a question"}]}', ("chats.jsonl:2:", "no assistant message")),
        (b'{"messages": [{"role": "assistant", "content": "caf\xe9"}]}', ("chats.jsonl:2:", "not UTF-8")),
        (b'{"messages": [{"role": "assistant", "content": "x", "weight": 2}]}', ("chats.jsonl:2:", "weight 2")),
    ],
    ids=["not-json", "no-messages", "unknown-role", "no-assistant", "not-utf8", "bad-weight"],
)
def test_a_bad_line_is_named_by_file_and_line_and_nothing_is_written(
    tmp_path: Path, second_line: bytes, fragments: tuple[str, ...]
) -> None:
    source = tmp_path / "chats.jsonl"
    source.write_bytes(GOOD.encode() + b"\n" + second_line + b"\n" + GOOD.encode() + b"\n")
    out_dir = tmp_path / "out"
    result = invoke("prepare", str(source), "--out", str(out_dir), "--tokenizer", "char")
    assert_one_error_line(result, *fragments)
    assert not out_dir.exists()


def test_an_empty_file_is_refused_by_name(tmp_path: Path) -> None:
    source = tmp_path / "chats.jsonl"
    source.write_bytes(b"\n  \n")
    out_dir = tmp_path / "out"
    result = invoke("prepare", str(source), "--out", str(out_dir), "--tokenizer", "char")
    assert_one_error_line(result, f"{source} is empty", "no conversations")
    assert not out_dir.exists()


def test_text_and_conversations_in_one_dataset_are_refused(tmp_path: Path) -> None:
    chats, text = tmp_path / "chats.jsonl", tmp_path / "notes.txt"
    chats.write_text(GOOD + "\n" + GOOD + "\n")
    text.write_text("Some text.\n")
    result = invoke("prepare", str(chats), str(text), "--out", str(tmp_path / "out"))
    assert_one_error_line(result, "hold conversations", "separate datasets")
