"""The chat template: conversations as token ids (for a prompt) and as ids plus a loss mask (for training).

One format for every model and tokenizer: ChatML as Qwen and llama.cpp use it (without tools),

    <|im_start|>system\\nYou are terse.<|im_end|>\\n<|im_start|>user\\nHello<|im_end|>\\n<|im_start|>assistant\\n

where the two markers are real special tokens (`chat_tokenizer` adds them). The Jinja string `CHATML_TEMPLATE` is
what a checkpoint stores and what an export hands to transformers; the ids are built here piece by piece instead of
by rendering that string and encoding the result, for two reasons:
  - text in a message is only ever encoded as text, so a `<|im_end|>` typed by a user cannot end its turn;
  - training needs to know which ids are the assistant's, which a rendered string has forgotten.
Piecewise is still exactly what transformers computes for the same conversation: its tokenizer splits the rendered
string at the special tokens and encodes each piece between them on its own, the pieces built here (a test holds
`apply_chat_template` to it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

from hellogpt.data.tokenizer import Tokenizer
from hellogpt.errors import UserError

TURN_START = "<|im_start|>"
# The end-of-turn token: a chat model's reply ends here (the decoding engine's end of text for it).
TURN_END = "<|im_end|>"
CHAT_MARKERS = (TURN_START, TURN_END)
ROLES = ("system", "user", "assistant")
ASSISTANT_ROLE = "assistant"
# The text between a turn's end marker and the next turn's start marker.
TURN_GAP = "\n"

# Qwen's ChatML template less its tool calls and default system message: each message as
# <|im_start|>role\ncontent<|im_end|>\n, then <|im_start|>assistant\n when a reply is to follow.
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)

Message = Mapping[str, Any]


def require_supported_template(template: str, where: object) -> None:
    """A stored template is one this code renders: ChatML as written here (ids are built piecewise, not by Jinja)."""
    if template.strip() != CHATML_TEMPLATE.strip():
        raise UserError(
            f"{where} has a chat template other than hellogpt's ChatML one, which is the only one it renders; "
            "tune the model here to store that template"
        )


def chat_tokenizer(tokenizer: Tokenizer) -> Tokenizer:
    """`tokenizer` with the two ChatML markers as special tokens (ordinary text keeps its ids)."""
    return tokenizer.with_special_tokens(CHAT_MARKERS)


def template_tokenizer(tokenizer: Tokenizer, chat_template: Optional[str], where: object) -> Tokenizer:
    """`tokenizer` as a model stored with `chat_template` reads it: with the ChatML markers when it is a chat model
    (UserError, naming `where`, for a template other than ours)."""
    if chat_template is None:
        return tokenizer
    require_supported_template(chat_template, where)
    return chat_tokenizer(tokenizer)


def is_chat_tokenizer(tokenizer: Tokenizer) -> bool:
    """Whether `tokenizer` has both ChatML markers as special tokens."""
    return all(marker in getattr(tokenizer, "special_tokens", {}) for marker in CHAT_MARKERS)


def turn_end_id(tokenizer: Tokenizer) -> int:
    """The id a chat model's reply ends with."""
    return _marker_ids(tokenizer)[1]


def render_prompt(messages: Sequence[Message], tokenizer: Tokenizer) -> list[int]:
    """The ids a chat model continues: the conversation, then the start of the assistant's turn
    (`apply_chat_template(messages, add_generation_prompt=True)`)."""
    start_id, _ = _marker_ids(tokenizer)
    ids: list[int] = []
    for message in messages:
        ids += _turn_ids(message, tokenizer)[0]
    return ids + [start_id] + tokenizer.encode(f"{ASSISTANT_ROLE}\n")


def render_training(messages: Sequence[Message], tokenizer: Tokenizer) -> tuple[list[int], list[bool]]:
    """The ids of a whole conversation and, per id, whether it is a trained target: the assistant's content and the
    `<|im_end|>` that ends it, unless the message says `"weight": 0` (OpenAI's fine-tuning format)."""
    ids: list[int] = []
    mask: list[bool] = []
    for message in messages:
        turn_ids, turn_mask = _turn_ids(message, tokenizer)
        ids += turn_ids
        mask += turn_mask
    return ids, mask


def _turn_ids(message: Message, tokenizer: Tokenizer) -> tuple[list[int], list[bool]]:
    """One message as `<|im_start|>role\\ncontent<|im_end|>\\n`, with its trained ids marked.

    `role\\ncontent` is encoded as one piece, as transformers does; a token that straddles the header and the content
    (BPE may join the newline to following spaces) holds content, so it is trained.
    """
    start_id, end_id = _marker_ids(tokenizer)
    role, content = _role_and_content(message)
    header = f"{role}\n"
    body = tokenizer.encode(header + content)
    gap = tokenizer.encode(TURN_GAP)
    ids = [start_id, *body, end_id, *gap]
    if role != ASSISTANT_ROLE or message.get("weight", 1) == 0:
        return ids, [False] * len(ids)
    header_bytes = len(header.encode("utf-8"))
    trained, end = [], 0
    for token_id in body:
        end += len(tokenizer.token_bytes(token_id))
        trained.append(end > header_bytes)
    return ids, [False, *trained, True] + [False] * len(gap)


def _role_and_content(message: Message) -> tuple[str, str]:
    role, content = message.get("role"), message.get("content")
    if role not in ROLES:
        raise UserError(f"unknown chat role {role!r}: use one of {', '.join(ROLES)}")
    if not isinstance(content, str):
        raise UserError(f"a {role} message's content must be text, not {type(content).__name__}")
    return role, content


def _marker_ids(tokenizer: Tokenizer) -> tuple[int, int]:
    special = getattr(tokenizer, "special_tokens", {})
    if not all(marker in special for marker in CHAT_MARKERS):
        raise UserError(
            f"the {tokenizer.name} tokenizer has no chat markers ({', '.join(CHAT_MARKERS)}): "
            "this is not a chat model's tokenizer"
        )
    return special[TURN_START], special[TURN_END]
