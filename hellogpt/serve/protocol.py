"""The OpenAI wire format: request bodies as strict pydantic models, and the objects sent back.

Requests are checked by the schema, so a wrong type, a negative `max_tokens` or an empty `messages` is
a 400 whose message comes from here. Fields of the OpenAI API that hellogpt does not implement
(penalties, logprobs, tools, ...) are accepted and ignored, as most compatible servers do; `n` must be 1.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hellogpt.config.schema import SampleConfig, Seed
from hellogpt.serve.events import Finished, SamplingSettings
from hellogpt.serve.limits import MAX_STOP_CHARS, MAX_STOP_STRINGS

# A reply may outgrow the context (the window slides, as in chat) but not without bound.
MAX_TOKENS_LIMIT = 8192
MAX_TEMPERATURE = 2.0


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
    n: Literal[1] = 1

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
        )

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class CompletionRequest(_GenerationRequest):
    """POST /v1/completions: continue `prompt`."""

    prompt: str


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

    def requested_max_tokens(self) -> Optional[int]:
        return _first_set(self.max_completion_tokens, self.max_tokens)


def _first_set(value: Any, default: Any) -> Any:
    return default if value is None else value


def error_body(message: str, error_type: str, code: Optional[str] = None, param: Optional[str] = None) -> dict[str, Any]:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def usage(finished: Finished) -> dict[str, int]:
    return {
        "prompt_tokens": finished.prompt_tokens,
        "completion_tokens": finished.completion_tokens,
        "total_tokens": finished.prompt_tokens + finished.completion_tokens,
    }


class _Reply:
    """The identity shared by a response and all its chunks."""

    id_prefix = ""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = f"{self.id_prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())


class CompletionReply(_Reply):
    """`text_completion` objects, whole or as stream chunks."""

    id_prefix = "cmpl"

    def opening_chunks(self) -> list[dict[str, Any]]:
        return []

    def chunk(self, text: str, finish_reason: Optional[str] = None) -> dict[str, Any]:
        return self._object([{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}])

    def closing_chunk(self, finished: Finished) -> dict[str, Any]:
        return self.chunk("", finished.reason)

    def usage_chunk(self, finished: Finished) -> dict[str, Any]:
        return {**self._object([]), "usage": usage(finished)}

    def response(self, text: str, finished: Finished) -> dict[str, Any]:
        return {**self.chunk(text, finished.reason), "usage": usage(finished)}

    def _object(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model, "choices": choices}


class ChatReply(_Reply):
    """`chat.completion` answers and `chat.completion.chunk` deltas; the first delta carries the role."""

    id_prefix = "chatcmpl"

    def opening_chunks(self) -> list[dict[str, Any]]:
        return [self._chunk({"role": "assistant", "content": ""})]

    def chunk(self, text: str) -> dict[str, Any]:
        return self._chunk({"content": text})

    def closing_chunk(self, finished: Finished) -> dict[str, Any]:
        return self._chunk({}, finished.reason)

    def usage_chunk(self, finished: Finished) -> dict[str, Any]:
        return {**self._object("chat.completion.chunk", []), "usage": usage(finished)}

    def response(self, text: str, finished: Finished) -> dict[str, Any]:
        choice = {
            "index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
            "finish_reason": finished.reason,
        }
        return {**self._object("chat.completion", [choice]), "usage": usage(finished)}

    def _chunk(self, delta: dict[str, Any], finish_reason: Optional[str] = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._object("chat.completion.chunk", [choice])

    def _object(self, kind: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": choices}


Reply = Union[CompletionReply, ChatReply]
