"""What a model is given to continue: a prompt's ids, and a conversation as ids or as one text.

A chat model (a checkpoint with a chat template) gets chat messages rendered by its template
(`hellogpt.data.chat_template`, `render_chat_turns`). A base model (a checkpoint without one, Hugging Face GPT-2)
has no template, so chat messages (`hellogpt serve`) become a plain transcript, one turn per line, ending where
the assistant speaks:

    system: You are terse.
    user: Hello
    assistant: Hi.
    user: Who are you?
    assistant:

A base model continues that text; the reply ends where the model starts a new user turn. With a base model the
chat REPL's memory mode has no roles: each prompt is text the model continues, so its earlier turns are
kept as the text they made, each ending a line (`continued_text`).
"""

from __future__ import annotations

from collections.abc import Sequence

from hellogpt.data.chat_template import render_prompt
from hellogpt.data.tokenizer import Tokenizer
from hellogpt.errors import UserError

ASSISTANT_ROLE = "assistant"
TURN_SEPARATOR = "\n"
# OpenAI's newer name for the system role; a template knows only the three roles.
ROLE_ALIASES = {"developer": "system"}
# A base model that goes on writing the transcript would speak for the user next: stop there.
TRANSCRIPT_STOPS = (f"{TURN_SEPARATOR}user:",)


def render_transcript(turns: Sequence[tuple[str, str]]) -> str:
    """The prompt for `(role, text)` turns: `role: text` lines, then `assistant:` for the reply to follow."""
    lines = [f"{role}: {text}" for role, text in turns]
    return TURN_SEPARATOR.join([*lines, f"{ASSISTANT_ROLE}:"])


def render_chat_turns(turns: Sequence[tuple[str, str]], tokenizer: Tokenizer) -> list[int]:
    """A chat model's prompt for `(role, text)` turns as the API gives them: its template's ids, ending where the
    assistant's turn starts."""
    messages = [{"role": ROLE_ALIASES.get(role, role), "content": text} for role, text in turns]
    return render_prompt(messages, tokenizer)


def continued_text(earlier: Sequence[tuple[str, str]], prompt: str) -> str:
    """The text for `prompt` after earlier `(prompt, reply)` exchanges, each of which ends a turn."""
    return "".join(f"{before}{reply}{TURN_SEPARATOR}" for before, reply in earlier) + prompt


def prompt_or_end_of_text(ids: list[int], tokenizer: Tokenizer) -> list[int]:
    """A prompt's ids; an empty prompt is the end-of-text token (a document's start) where the tokenizer has one,
    since a model needs at least one token to continue."""
    if ids:
        return ids
    if tokenizer.eot_id is not None:
        return [tokenizer.eot_id]
    raise UserError("the prompt is empty: give some text for the model to continue")
