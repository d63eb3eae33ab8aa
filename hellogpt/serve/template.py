"""Chat messages -> one prompt text, since hellogpt's models are plain language models.

hellogpt checkpoints and Hugging Face GPT-2 carry no chat template of their own, so every
conversation becomes a plain transcript, one turn per line, ending where the assistant speaks:

    system: You are terse.
    user: Hello
    assistant: Hi.
    user: Who are you?
    assistant:

A base model continues that text; the reply ends where the model starts a new user turn.
"""

from __future__ import annotations

from collections.abc import Sequence

ASSISTANT_ROLE = "assistant"
TURN_SEPARATOR = "\n"
# A base model that goes on writing the transcript would speak for the user next: stop there.
TRANSCRIPT_STOPS = (f"{TURN_SEPARATOR}user:",)


def render_transcript(turns: Sequence[tuple[str, str]]) -> str:
    """The prompt for `(role, text)` turns: `role: text` lines, then `assistant:` for the reply to follow."""
    lines = [f"{role}: {text}" for role, text in turns]
    return TURN_SEPARATOR.join([*lines, f"{ASSISTANT_ROLE}:"])
