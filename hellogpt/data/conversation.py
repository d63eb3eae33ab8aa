"""What a plain language model is given to continue: a prompt's ids, and a conversation as one text.

hellogpt checkpoints and Hugging Face GPT-2 carry no chat template of their own, so chat messages
(`hellogpt serve`) become a plain transcript, one turn per line, ending where the assistant speaks:

    system: You are terse.
    user: Hello
    assistant: Hi.
    user: Who are you?
    assistant:

A base model continues that text; the reply ends where the model starts a new user turn. The chat
REPL's memory mode has no roles: each prompt is text the model continues, so its earlier turns are
kept as the text they made, each ending a line (`continued_text`).
"""

from __future__ import annotations

from collections.abc import Sequence

from hellogpt.data.tokenizer import Tokenizer
from hellogpt.errors import UserError

ASSISTANT_ROLE = "assistant"
TURN_SEPARATOR = "\n"
# A base model that goes on writing the transcript would speak for the user next: stop there.
TRANSCRIPT_STOPS = (f"{TURN_SEPARATOR}user:",)


def render_transcript(turns: Sequence[tuple[str, str]]) -> str:
    """The prompt for `(role, text)` turns: `role: text` lines, then `assistant:` for the reply to follow."""
    lines = [f"{role}: {text}" for role, text in turns]
    return TURN_SEPARATOR.join([*lines, f"{ASSISTANT_ROLE}:"])


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
