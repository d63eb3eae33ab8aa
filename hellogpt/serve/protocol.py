"""The OpenAI wire format: request bodies as strict pydantic models, and the objects sent back.

Requests are checked by the schema, so a wrong type, a negative `max_tokens` or an empty `messages` is
a 400 whose message comes from here. Fields of the OpenAI API that hellogpt does not implement (tools,
logit_bias, ...) are accepted and ignored, as most compatible servers do; `best_of` (other than `n`) is refused.
Log-probabilities (`logprobs`, `echo`) are the model's own distribution (see `hellogpt.decode.logprobs`), written
in the legacy completions shape (`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`) or the chat one
(`content[]` of `token`, `logprob`, `bytes`, `top_logprobs`).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal, Optional, Union

import codecs
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hellogpt.config.schema import SampleConfig, Seed
from hellogpt.decode.logprobs import TokenLogprob
from hellogpt.decode.text import TokenBytes
from hellogpt.serve.events import Finished, SamplingSettings
from hellogpt.serve.limits import MAX_STOP_CHARS, MAX_STOP_STRINGS

# A reply may outgrow the context (the window slides, as in chat) but not without bound.
MAX_TOKENS_LIMIT = 8192
MAX_TEMPERATURE = 2.0
# OpenAI's bounds: choices per prompt (ours: samples sharing one prefill), the penalties, and the alternatives
# listed per token by completions (`logprobs`) and by chat (`top_logprobs`).
MAX_CHOICES = 8
MAX_PENALTY = 2.0
MAX_COMPLETION_LOGPROBS = 5
MAX_CHAT_TOP_LOGPROBS = 20


class FieldProblem(ValueError):
    """A rule across fields broken: raised by a model validator, reported naming `field` (pydantic cannot tell)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    include_usage: bool = False


class _GenerationRequest(BaseModel):
    """The fields both endpoints share; unset sampling fields take the server's `sample` settings."""

    model_config = ConfigDict(extra="ignore", strict=True)

    model: Optional[str] = None
    max_tokens: Optional[int] = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: Optional[float] = Field(None, ge=0.0, le=MAX_TEMPERATURE)
    top_p: Optional[float] = Field(None, gt=0.0, le=1.0)
    top_k: Optional[int] = Field(None, ge=1)
    stop: Optional[Union[str, list[str]]] = None
    seed: Optional[Seed] = None
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    frequency_penalty: Optional[float] = Field(None, ge=-MAX_PENALTY, le=MAX_PENALTY)
    presence_penalty: Optional[float] = Field(None, ge=-MAX_PENALTY, le=MAX_PENALTY)

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, stop: Optional[Union[str, list[str]]]) -> Optional[Union[str, list[str]]]:
        stops = [stop] if isinstance(stop, str) else stop or []
        if len(stops) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings")
        if any(not text for text in stops):
            raise ValueError("stop strings must not be empty")
        if any(len(text) > MAX_STOP_CHARS for text in stops):
            raise ValueError(f"a stop string may be at most {MAX_STOP_CHARS} characters long")
        return stop

    def requested_max_tokens(self) -> Optional[int]:
        return self.max_tokens

    def requested_logprobs(self) -> Optional[int]:
        """How many alternatives each token's log-probability comes with (None: no log-probabilities)."""
        return None

    def sampling(self, defaults: SampleConfig, extra_stops: tuple[str, ...] = ()) -> SamplingSettings:
        """This request's settings, field by field over the server's defaults."""
        stops = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return SamplingSettings(
            max_tokens=_first_set(self.requested_max_tokens(), defaults.max_new_tokens),
            temperature=_first_set(self.temperature, defaults.temperature),
            top_k=_first_set(self.top_k, defaults.top_k),
            top_p=_first_set(self.top_p, defaults.top_p),
            seed=_first_set(self.seed, defaults.seed),
            stops=stops + extra_stops,
            frequency_penalty=self.frequency_penalty or 0.0,
            presence_penalty=self.presence_penalty or 0.0,
            logprobs=self.requested_logprobs(),
            score_prompt=self.scores_prompt(),
        )

    def scores_prompt(self) -> bool:
        """Whether the prompt's own tokens are scored (`echo` with `logprobs`)."""
        return False

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


PromptIds = list[int]


class CompletionRequest(_GenerationRequest):
    """POST /v1/completions: continue `prompt` (a text, texts, token ids or lists of them: one choice per prompt
    and sample); `echo` writes the prompt before its continuation, and with `max_tokens` 0 only scores it."""

    prompt: Union[str, list[str], list[int], list[PromptIds]]
    max_tokens: Optional[int] = Field(None, ge=0, le=MAX_TOKENS_LIMIT)
    echo: bool = False
    logprobs: Optional[int] = Field(None, ge=0, le=MAX_COMPLETION_LOGPROBS)
    best_of: Optional[int] = None

    @field_validator("prompt")
    @classmethod
    def _prompts_not_empty(cls, prompt: Union[str, list[Any]]) -> Union[str, list[Any]]:
        if isinstance(prompt, list) and not prompt:
            raise ValueError("give at least one prompt")
        if isinstance(prompt, list) and any(isinstance(item, list) and not item for item in prompt):
            raise ValueError("a prompt of token ids must hold at least one id")
        return prompt

    @model_validator(mode="after")
    def _fields_agree(self) -> CompletionRequest:
        if self.max_tokens == 0 and not self.echo:
            raise FieldProblem("max_tokens", "max_tokens: 0 only scores the prompt, which needs `echo: true`")
        if self.best_of is not None and self.best_of != self.n:
            raise FieldProblem(
                "best_of", "best_of: not implemented (it would rank samples by log-probability); ask for `n` choices "
                "with `logprobs` and choose yourself"
            )
        return self

    def prompt_list(self) -> list[Union[str, list[int]]]:
        """The prompts, one per choice group: a text or a list of token ids each."""
        if isinstance(self.prompt, str) or (self.prompt and isinstance(self.prompt[0], int)):
            return [self.prompt]  # type: ignore[list-item]
        return list(self.prompt)  # type: ignore[arg-type]

    def requested_logprobs(self) -> Optional[int]:
        return self.logprobs

    def scores_prompt(self) -> bool:
        return self.echo and self.logprobs is not None


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[TextPart], None] = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(_GenerationRequest):
    """POST /v1/chat/completions: reply to `messages` (rendered by `template.render_transcript`)."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    logprobs: bool = False
    top_logprobs: Optional[int] = Field(None, ge=0, le=MAX_CHAT_TOP_LOGPROBS)

    @model_validator(mode="after")
    def _fields_agree(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise FieldProblem("top_logprobs", "top_logprobs: needs `logprobs: true`")
        return self

    def requested_max_tokens(self) -> Optional[int]:
        return _first_set(self.max_completion_tokens, self.max_tokens)

    def requested_logprobs(self) -> Optional[int]:
        return (self.top_logprobs or 0) if self.logprobs else None


def _first_set(value: Any, default: Any) -> Any:
    return default if value is None else value


def error_body(message: str, error_type: str, code: Optional[str] = None, param: Optional[str] = None) -> dict[str, Any]:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def token_text(tokenizer: TokenBytes, token: int) -> str:
    """A token as the API names it: its text, or (part of a character only) its bytes as `bytes:\\xNN...`, as
    OpenAI writes them, so that no two tokens share a name."""
    raw = tokenizer.token_bytes(token)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{byte:02x}" for byte in raw)


class _TextOffsets:
    """Where each token's text begins in a choice's text (`text_offset`), counted in characters as they decode."""

    def __init__(self, tokenizer: TokenBytes, start: int) -> None:
        self._tokenizer = tokenizer
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._offset = start

    def next(self, token: int) -> int:
        offset = self._offset
        self._offset += len(self._decoder.decode(self._tokenizer.token_bytes(token)))
        return offset


@dataclass
class ChoiceOutput:
    """One choice as collected for a whole (not streamed) answer."""

    text: str
    tokens: list[TokenLogprob]
    finished: Finished


class _Reply:
    """The identity shared by a response and all its chunks."""

    id_prefix = ""

    def __init__(self, model: str, tokenizer: TokenBytes) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.id = f"{self.id_prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())


class CompletionReply(_Reply):
    """`text_completion` objects, whole or as stream chunks; each choice's echoed prompt comes first."""

    id_prefix = "cmpl"

    def __init__(
        self, model: str, tokenizer: TokenBytes, prompts: Sequence[str], n: int, echo: bool, logprobs: Optional[int]
    ) -> None:
        """`prompts`: each prompt's text (choice i continues prompt i // n)."""
        super().__init__(model, tokenizer)
        self.prompts, self.n, self.echo, self.logprobs = list(prompts), n, echo, logprobs
        self._offsets: dict[int, _TextOffsets] = {}

    def echoed(self, index: int) -> str:
        """The text a choice starts with: its prompt when echoing."""
        return self.prompts[index // self.n] if self.echo else ""

    def opening_chunks(self, choices: int) -> list[dict[str, Any]]:
        """The echoed prompts, unless they come with their log-probabilities (`prompt_chunk`)."""
        if not self.echo or self.logprobs is not None:
            return []
        return [self._object([self._choice(index, self.echoed(index))]) for index in range(choices)]

    def prompt_chunk(self, index: int, scores: Sequence[TokenLogprob]) -> dict[str, Any]:
        return self.chunk(index, self.echoed(index), scores)

    def chunk(
        self, index: int, text: str, tokens: Sequence[TokenLogprob] = (), finish_reason: Optional[str] = None
    ) -> dict[str, Any]:
        return self._object([self._choice(index, text, self._logprobs(index, tokens), finish_reason)])

    def closing_chunk(self, index: int, finished: Finished) -> dict[str, Any]:
        return self.chunk(index, "", (), finished.reason)

    def usage_chunk(self, counts: dict[str, int]) -> dict[str, Any]:
        return {**self._object([]), "usage": counts}

    def response(self, choices: dict[int, ChoiceOutput], counts: dict[str, int]) -> dict[str, Any]:
        rendered = [
            self._choice(index, choice.text, self._logprobs(index, choice.tokens), choice.finished.reason)
            for index, choice in sorted(choices.items())
        ]
        return {**self._object(rendered), "usage": counts}

    def _logprobs(self, index: int, tokens: Sequence[TokenLogprob]) -> Optional[dict[str, Any]]:
        if self.logprobs is None:
            return None
        if index not in self._offsets:  # offsets count from the choice's start: its echo, else the prompt's end
            self._offsets[index] = _TextOffsets(self.tokenizer, 0 if self.echo else len(self.prompts[index // self.n]))
        offsets = self._offsets[index]
        name = lambda token: token_text(self.tokenizer, token)  # noqa: E731
        return {
            "tokens": [name(entry.token) for entry in tokens],
            "token_logprobs": [entry.logprob for entry in tokens],
            "top_logprobs": [
                None if entry.logprob is None else {name(token): logprob for token, logprob in entry.top}
                for entry in tokens
            ],
            "text_offset": [offsets.next(entry.token) for entry in tokens],
        }

    @staticmethod
    def _choice(
        index: int, text: str, logprobs: Optional[dict[str, Any]] = None, finish_reason: Optional[str] = None
    ) -> dict[str, Any]:
        return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}

    def _object(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model, "choices": choices}


class ChatReply(_Reply):
    """`chat.completion` answers and `chat.completion.chunk` deltas; the first delta of each choice carries the role."""

    id_prefix = "chatcmpl"

    def __init__(self, model: str, tokenizer: TokenBytes, logprobs: bool) -> None:
        super().__init__(model, tokenizer)
        self.logprobs = logprobs

    def echoed(self, index: int) -> str:
        return ""  # a chat reply never repeats its messages

    def opening_chunks(self, choices: int) -> list[dict[str, Any]]:
        return [self._chunk(index, {"role": "assistant", "content": ""}) for index in range(choices)]

    def prompt_chunk(self, index: int, scores: Sequence[TokenLogprob]) -> Optional[dict[str, Any]]:
        return None  # chat never scores its prompt

    def chunk(self, index: int, text: str, tokens: Sequence[TokenLogprob] = ()) -> dict[str, Any]:
        return self._chunk(index, {"content": text}, logprobs=self._logprobs(tokens))

    def closing_chunk(self, index: int, finished: Finished) -> dict[str, Any]:
        return self._chunk(index, {}, finished.reason)

    def usage_chunk(self, counts: dict[str, int]) -> dict[str, Any]:
        return {**self._object("chat.completion.chunk", []), "usage": counts}

    def response(self, choices: dict[int, ChoiceOutput], counts: dict[str, int]) -> dict[str, Any]:
        rendered = [
            {
                "index": index, "message": {"role": "assistant", "content": choice.text},
                "logprobs": self._logprobs(choice.tokens), "finish_reason": choice.finished.reason,
            }
            for index, choice in sorted(choices.items())
        ]
        return {**self._object("chat.completion", rendered), "usage": counts}

    def _logprobs(self, tokens: Sequence[TokenLogprob]) -> Optional[dict[str, Any]]:
        if not self.logprobs:
            return None
        return {
            "content": [
                {**self._token(entry.token, entry.logprob), "top_logprobs": [self._token(*top) for top in entry.top]}
                for entry in tokens
            ]
        }

    def _token(self, token: int, logprob: Optional[float]) -> dict[str, Any]:
        return {
            "token": token_text(self.tokenizer, token), "logprob": logprob,
            "bytes": list(self.tokenizer.token_bytes(token)),
        }

    def _chunk(
        self, index: int, delta: dict[str, Any], finish_reason: Optional[str] = None,
        logprobs: Optional[dict[str, Any]] = None,
    ) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
        return self._object("chat.completion.chunk", [choice])

    def _object(self, kind: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": choices}


Reply = Union[CompletionReply, ChatReply]
