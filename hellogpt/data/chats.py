"""Conversations in OpenAI's fine-tuning JSONL: read, checked line by line, and cut into rows a model can hold.

Each line is one conversation, `{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}`, a
message optionally with `"weight": 0|1` (0: not trained on). A bad line stops `prepare` with one error naming the file
and the line, before anything is written: a chat set with a broken line is usually a broken export, and training on
what is left of it would hide that.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hellogpt.data.sources import BUILTIN_PREFIX, BUILTIN_PYDOC_CHAT, Document
from hellogpt.errors import UserError

CHAT_SUFFIX = ".jsonl"
CHAT_GLOB = "*.jsonl"
# The glob `prepare` uses for text: a folder read with it is a chat folder when it holds .jsonl files and no text.
TEXT_GLOB = "*.txt"
ROLES = ("system", "user", "assistant")
WEIGHTS = (0, 1)
BUILTIN_CHAT_SETS = (BUILTIN_PYDOC_CHAT,)
FORMAT_HINT = 'each line is one conversation: {"messages": [{"role": "user", "content": "..."}, ...]}'


@dataclass(frozen=True)
class Conversation:
    """One checked conversation, where it came from (`file:line`) and the raw bytes of its line."""

    messages: tuple[dict[str, Any], ...]
    origin: str
    raw_bytes: int

    @property
    def turns(self) -> int:
        return len(self.messages)


def are_chat_sources(sources: Sequence[str], glob: str) -> bool:
    """Whether `prepare` reads `sources` as conversations; text and conversations in one dataset are refused."""
    chats = [source for source in sources if is_chat_source(source, glob, BUILTIN_CHAT_SETS)]
    if chats and len(chats) < len(sources):
        texts = [source for source in sources if source not in chats]
        raise UserError(
            f"{' '.join(chats)} hold conversations and {' '.join(texts)} text: prepare them into separate datasets"
        )
    return bool(chats)


def is_chat_source(source: str, glob: str, builtin_chat_sets: Sequence[str]) -> bool:
    """Whether `prepare` reads `source` as conversations: a .jsonl file, a built-in chat set, or a folder whose files
    (by `glob`, or .jsonl when the glob is the text default and the folder holds no text) are .jsonl."""
    if source.startswith(BUILTIN_PREFIX):
        return source in builtin_chat_sets
    path = Path(source).expanduser()
    if path.is_file():
        return path.suffix == CHAT_SUFFIX
    if not path.is_dir():
        return False
    if glob != TEXT_GLOB:
        return glob.endswith(CHAT_SUFFIX)
    return not any(path.rglob(TEXT_GLOB)) and any(path.rglob(CHAT_GLOB))


def chat_glob(glob: str) -> str:
    """The glob a chat folder is read with: .jsonl unless the user chose one."""
    return CHAT_GLOB if glob == TEXT_GLOB else glob


def read_conversations(document: Document) -> list[Conversation]:
    """Every conversation of one JSONL document, checked; the first bad line is a UserError naming file and line."""
    with document.open() as stream:
        data = stream.read()
    conversations = []
    for number, line in enumerate(data.splitlines(keepends=True), start=1):
        where = f"{document.name}:{number}"
        text = _decoded(line, where, first=number == 1)
        if text.strip():
            conversations.append(Conversation(_checked_messages(text, where), where, len(line)))
    if not conversations:
        raise UserError(f"{document.name} is empty: it holds no conversations ({FORMAT_HINT})")
    return conversations


def _decoded(line: bytes, where: str, first: bool) -> str:
    try:
        return line.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError as error:
        raise UserError(
            f"{where}: not UTF-8 at byte {error.start} of the line ({error.reason}): convert the file to UTF-8"
        ) from None


def _checked_messages(text: str, where: str) -> tuple[dict[str, Any], ...]:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"{where}: not JSON ({error.msg} at column {error.colno}): {FORMAT_HINT}") from None
    messages = record.get("messages") if isinstance(record, dict) else None
    if not isinstance(messages, list) or not messages:
        raise UserError(f'{where}: no "messages" list: {FORMAT_HINT}')
    checked = tuple(_checked_message(message, index, where) for index, message in enumerate(messages, start=1))
    if not any(message["role"] == "assistant" for message in checked):
        raise UserError(f"{where}: the conversation has no assistant message, so nothing in it is trained on: add one")
    return checked


def _checked_message(message: Any, index: int, where: str) -> dict[str, Any]:
    if not isinstance(message, dict):
        raise UserError(f"{where}: message {index} is not an object with a role and a content: {FORMAT_HINT}")
    role = message.get("role")
    if role not in ROLES:
        raise UserError(f"{where}: message {index} has the unknown role {role!r}: use one of {', '.join(ROLES)}")
    content = message.get("content")
    if not isinstance(content, str):
        raise UserError(f"{where}: message {index} ({role}) has no text content: give \"content\" as a string")
    weight = message.get("weight", 1)
    if isinstance(weight, bool) or weight not in WEIGHTS:
        raise UserError(f"{where}: message {index} has weight {weight!r}: use 0 (not trained) or 1")
    checked = {"role": role, "content": content}
    if "weight" in message:
        checked["weight"] = weight
    return checked


def turn_rows(ids: Sequence[int], mask: Sequence[bool], turn_start_id: int, max_row: int) -> list[tuple[int, int]]:
    """[start, end) rows of at most `max_row` ids that a rendered conversation is cut into: at the start of a turn
    where one fits, else hard at `max_row`. Rows with no trained target (an id after the first) are left out."""
    boundaries = [index for index, token_id in enumerate(ids) if token_id == turn_start_id]
    rows = []
    start = 0
    while start < len(ids):
        end = min(start + max_row, len(ids))
        if end < len(ids):
            fitting = [boundary for boundary in boundaries if start < boundary <= end]
            end = fitting[-1] if fitting else end
        if any(mask[start + 1 : end]):
            rows.append((start, end))
        start = end
    return rows
