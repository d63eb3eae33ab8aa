"""builtin:pydoc-chat: questions about Python answered from the help texts every Python install has.

Made offline and deterministically (the same Python gives the same set) from the docstrings of the built-in
functions and classes, the help topics of `pydoc_data.topics` (Python's documentation, PSF license, as
builtin:pydoc) and a few standard modules' docstrings. Answers are the first sentence of the text, kept short so
that a conversation fits the quick-start model's 128 characters: the set teaches the shape of a chat (a question,
one short reply, the end of the turn), not knowledge of Python.
"""

from __future__ import annotations

import builtins
import importlib
import json
import re
from collections.abc import Iterator

# Replies longer than this are cut at a word and end in "...": question, reply and markers fit 128 characters.
ANSWER_MAX_CHARS = 64
SYSTEM_PROMPT = "Answer briefly."
# Every third conversation has the system message above; every fourth item also opens a three-question one.
SYSTEM_EVERY = 3
MULTI_TURN_EVERY = 4
MULTI_TURN_QUESTIONS = 3
# Standard modules whose docstrings are asked about (all in every CPython install).
MODULES = (
    "abc", "argparse", "array", "base64", "bisect", "calendar", "collections", "copy", "csv", "datetime",
    "decimal", "difflib", "fractions", "functools", "glob", "gzip", "hashlib", "heapq", "html", "json",
    "math", "operator", "os", "pathlib", "pickle", "platform", "pprint", "queue", "random", "re", "shutil",
    "socket", "statistics", "string", "struct", "sys", "tempfile", "textwrap", "time", "typing", "unittest",
    "uuid", "zipfile", "zlib",
)
BUILTIN_QUESTIONS = ("What does {name} do?", "What is {name} in Python?", "Explain the built-in {name}.")
TOPIC_QUESTIONS = ("Tell me about {name}.", "What does the reference say about {name}?")
MODULE_QUESTIONS = ("What is the {name} module?", "What is {name} for?")
_SIGNATURE = re.compile(r"^\S+\(.*\)|-->|->|::=")
_SENTENCE_END = re.compile(r"(?<=[.!?:])\s")


def pydoc_chat_jsonl() -> bytes:
    """The whole set as OpenAI fine-tuning JSONL, one conversation per line."""
    lines = [json.dumps({"messages": messages}, ensure_ascii=False) for messages in conversations()]
    return ("\n".join(lines) + "\n").encode("utf-8")


def conversations() -> Iterator[list[dict[str, str]]]:
    """Each question on its own (every third with a system message), then three-question conversations."""
    items = list(_questions_and_answers())
    for index, (question, answer) in enumerate(items):
        system = [{"role": "system", "content": SYSTEM_PROMPT}] if index % SYSTEM_EVERY == 0 else []
        yield [*system, {"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    for start in range(0, len(items) - MULTI_TURN_QUESTIONS + 1, MULTI_TURN_EVERY):
        messages = []
        for question, answer in items[start : start + MULTI_TURN_QUESTIONS]:
            messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        yield messages


def _questions_and_answers() -> Iterator[tuple[str, str]]:
    """(question, answer) pairs in a fixed order, phrased in turn from each kind's question forms."""
    alphabet = _help_text_characters()
    sources = (
        (BUILTIN_QUESTIONS, _builtin_texts()),
        (TOPIC_QUESTIONS, _topic_texts()),
        (MODULE_QUESTIONS, _module_texts()),
    )
    for forms, texts in sources:
        for index, (name, text) in enumerate(texts):
            answer = first_sentence(text)
            question = forms[index % len(forms)].format(name=name)
            # The set uses only the help texts' characters: a char model of builtin:pydoc can be tuned on it.
            if answer and set(question + answer) <= alphabet:
                yield question, answer


def _builtin_texts() -> Iterator[tuple[str, str]]:
    for name in sorted(dir(builtins)):
        value = getattr(builtins, name)
        if not name.startswith("_") and isinstance(value.__doc__, str) and (callable(value)):
            yield (f"{name}()" if not isinstance(value, type) else name), value.__doc__


def _topic_texts() -> Iterator[tuple[str, str]]:
    from pydoc_data.topics import topics

    for name in sorted(topics):
        heading, _, body = topics[name].partition("\n")
        yield heading.strip(), body


def _module_texts() -> Iterator[tuple[str, str]]:
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # a Python built without one (zlib, say) skips it
            continue
        if isinstance(module.__doc__, str):
            yield name, module.__doc__


def first_sentence(text: str) -> str:
    """The first sentence of the first prose paragraph (signature lines and headings skipped), at most
    ANSWER_MAX_CHARS long."""
    for paragraph in re.split(r"\n\s*\n", text):
        lines = [line.strip() for line in paragraph.strip().splitlines()]
        if not lines or _SIGNATURE.search(lines[0]) or set(lines[0]) <= set("*=-~ ") or lines[0].startswith(">>>"):
            continue
        prose = " ".join(lines)
        sentence = _SENTENCE_END.split(prose, maxsplit=1)[0].rstrip(":")
        return _shortened(sentence if sentence.endswith((".", "!", "?")) else sentence + ".")
    return ""


def _shortened(sentence: str) -> str:
    if len(sentence) <= ANSWER_MAX_CHARS:
        return sentence
    cut = sentence[: ANSWER_MAX_CHARS - 3].rsplit(" ", 1)[0].rstrip(",;:")
    return cut + "..."


def _help_text_characters() -> set[str]:
    """Every character of Python's help topics (builtin:pydoc's text), plus the newline."""
    from pydoc_data.topics import topics

    return set("".join(topics.values())) | {"\n"}
