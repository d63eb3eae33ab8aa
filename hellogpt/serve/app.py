"""The FastAPI routes: OpenAI's /v1 endpoints over the scheduler, the chat page, health, and errors.

Every failure a client can cause is an OpenAI-shaped 4xx (`{"error": {"message", "type", "param", "code"}}`);
the handlers only validate, tokenize, submit to the scheduler and relay its events, plain or as
server-sent events. A prompt longer than the model's context keeps its most recent tokens (the sliding
window of `chat`), and the response says how many were dropped in the `X-Prompt-Tokens-Dropped` header.
The bounds of `limits.ServeLimits` are enforced here (prompt characters, messages, the queue) and by the ASGI
layers of `guards` (body size and read time, Host and Origin); `/health` is 503 once the generation thread is gone.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Optional, Union

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from hellogpt.config.schema import SampleConfig
from hellogpt.data.conversation import TRANSCRIPT_STOPS, prompt_or_end_of_text, render_chat_turns, render_transcript
from hellogpt.data.tokenizer import Tokenizer
from hellogpt.decode.logprobs import TokenLogprob
from hellogpt.errors import UserError
from hellogpt.serve.batching import QueueFull, Scheduler, SequenceHandle
from hellogpt.serve.events import Failed, Finished, PromptScored, SamplingSettings, TextPiece
from hellogpt.serve.guards import BodyLimit, LocalOnly
from hellogpt.serve.limits import RETRY_AFTER_SECONDS, ServeLimits
from hellogpt.serve.protocol import (
    ChatCompletionRequest,
    ChatReply,
    ChoiceOutput,
    CompletionReply,
    CompletionRequest,
    FieldProblem,
    Reply,
    error_body,
    usage,
)

DROPPED_TOKENS_HEADER = "X-Prompt-Tokens-Dropped"
# Prompts up to this long are tokenised on the event loop (well under a millisecond), longer ones on a thread.
INLINE_ENCODE_CHARS = 4096
_UNION_MEMBER_TAG = re.compile(r"^(str|int|float|bool|none|[a-z-]+\[.*\])$")
PAGE_FILE = "page.html"


@dataclass(frozen=True)
class ServedModel:
    """What the server says about its model: the id clients name, the context length and a few facts."""

    id: str
    block_size: int
    facts: dict[str, str] = field(default_factory=dict)
    chat_template: Optional[str] = None  # a chat model's (its messages are rendered with it), else the transcript
    created: int = field(default_factory=lambda: int(time.time()))


class ApiError(Exception):
    """A request the server refuses; rendered as OpenAI's error object with `status`."""

    def __init__(
        self, status: int, message: str, error_type: str = "invalid_request_error",
        code: Optional[str] = None, param: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.error_type, self.code, self.param = status, message, error_type, code, param

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        if self.status == 429:
            headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        body = error_body(self.message, self.error_type, self.code, self.param)
        return JSONResponse(body, status_code=self.status, headers=headers)


def create_app(
    scheduler: Scheduler, tokenizer: Tokenizer, served: ServedModel, defaults: SampleConfig, api_key: Optional[str] = None,
    limits: ServeLimits = ServeLimits(), loopback: bool = True, allowed_origins: tuple[str, ...] = (),
) -> FastAPI:
    """The whole HTTP surface around a running `scheduler`; `api_key` (when set) guards /v1. Without a key, only
    this machine's own pages may call it (`loopback`: the server listens on a loopback address), but for
    `allowed_origins`."""
    app = FastAPI(title="hellogpt", docs_url=None, redoc_url=None, openapi_url=None)
    page = resources.files("hellogpt.serve").joinpath(PAGE_FILE).read_text(encoding="utf-8")
    _add_error_handlers(app)
    # The last added runs first: Host and Origin are checked before a byte of the body is read.
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes, read_seconds=limits.read_timeout_seconds)
    keyless = api_key is None
    app.add_middleware(
        LocalOnly, check_host=keyless and loopback, check_origin=keyless, allowed_origins=allowed_origins
    )

    @app.get("/", include_in_schema=False)
    async def chat_page() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> JSONResponse:
        status = "failed" if scheduler.failure else "ok" if scheduler.alive else "stopping"
        body = {"status": status, "model": served.id, **scheduler.load}
        if scheduler.failure:
            body["error"] = scheduler.failure
        return JSONResponse(body, status_code=200 if status == "ok" else 503)

    api = APIRouter(prefix="/v1", dependencies=[Depends(_key_checker(api_key))])

    @api.get("/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_object(served)]}

    @api.get("/models/{model_id:path}")
    async def retrieve_model(model_id: str) -> dict[str, Any]:
        _check_model(model_id, served)
        return _model_object(served)

    @api.post("/completions")
    async def completions(request: Request) -> Response:
        body = _parse(CompletionRequest, await request.body())
        _check_model(body.model, served)
        texts, prompts = [], []
        given = body.prompt_list()
        for number, prompt in enumerate(given):
            field_name = "prompt" if len(given) == 1 else f"prompt.{number}"
            if isinstance(prompt, str):
                _check_length(prompt, field_name, limits)
                texts.append(prompt)
                prompts.append(await _encode(tokenizer, prompt, field_name))
            else:
                _check_ids(prompt, field_name, tokenizer.vocab_size, limits)
                texts.append(tokenizer.decode(prompt))
                prompts.append(prompt)
        reply = CompletionReply(served.id, tokenizer, texts, body.n, body.echo, body.logprobs)
        return await _answer(request, scheduler, prompts, body.sampling(defaults), body, reply, served)

    @api.post("/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body = _parse(ChatCompletionRequest, await request.body())
        _check_model(body.model, served)
        if len(body.messages) > limits.max_messages:
            raise ApiError(
                400, f"messages: {len(body.messages)} messages; this server takes at most {limits.max_messages} "
                "(--max-messages)", code="too_many_messages", param="messages",
            )
        turns = [(message.role, message.text()) for message in body.messages]
        if served.chat_template is not None:  # the scheduler's eot_id (the end of turn) ends the reply
            _check_length("".join(text for _, text in turns), "messages", limits)
            try:
                prompt_ids = render_chat_turns(turns, tokenizer)
            except UserError as error:
                raise ApiError(400, f"messages: {error}", param="messages") from None
            settings = body.sampling(defaults)
        else:
            prompt = render_transcript(turns)
            _check_length(prompt, "messages", limits)
            prompt_ids = await _encode(tokenizer, prompt, "messages")
            settings = body.sampling(defaults, extra_stops=TRANSCRIPT_STOPS)
        reply = ChatReply(served.id, tokenizer, body.logprobs)
        return await _answer(request, scheduler, [prompt_ids], settings, body, reply, served)

    app.include_router(api)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        return error.response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if error.status_code == 404 else None
        return ApiError(error.status_code, str(error.detail), code=code).response()

    @app.exception_handler(Exception)
    async def bug(_: Request, error: Exception) -> JSONResponse:  # a bug: the client still gets OpenAI's shape
        return ApiError(500, f"the server failed ({type(error).__name__})", "server_error", code="server_error").response()


def _key_checker(api_key: Optional[str]):
    """A dependency that refuses /v1 requests without `Authorization: Bearer <api_key>` (when a key is set)."""

    async def check_key(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), api_key.encode()):
            raise ApiError(
                401, "missing or incorrect API key: send it as `Authorization: Bearer KEY` (the --api-key of the server)",
                code="invalid_api_key",
            )

    return check_key


def _parse(model: type[BaseModel], body: bytes) -> Any:
    """The request body checked against its schema; the first problem becomes a 400 naming the field."""
    try:
        return model.model_validate_json(body or b"")
    except ValidationError as error:
        problems = error.errors(include_url=False)
        # Of the errors a union gives (one per member), the one that went deepest says most.
        problem = max(problems, key=lambda candidate: len(_field_path(candidate["loc"])))
        location = ".".join(_field_path(problem["loc"]))
        message = problem["msg"].removeprefix("Value error, ")
        cause = problem.get("ctx", {}).get("error")
        if isinstance(cause, FieldProblem):  # a rule across fields: the field it names
            raise ApiError(400, str(cause), param=cause.field) from None
        if problem["type"] == "json_invalid":
            raise ApiError(400, f"the body is not valid JSON ({problem['ctx'].get('error', message)})") from None
        if problem["type"] == "model_type" and not problem["loc"]:
            raise ApiError(400, "the body must be a JSON object") from None
        raise ApiError(400, f"{location}: {message}" if location else message, param=location or None) from None


def _field_path(location: tuple[Any, ...]) -> list[str]:
    """The fields of an error's location, without the union-member tags pydantic puts in it (`str`, `list[...]`)."""
    return [str(part) for part in location if not (isinstance(part, str) and _UNION_MEMBER_TAG.match(part))]


def _check_model(model_id: Optional[str], served: ServedModel) -> None:
    if model_id is not None and model_id != served.id:
        raise ApiError(
            404, f"the model {model_id!r} does not exist: this server serves {served.id!r}",
            code="model_not_found", param="model",
        )


def _check_length(text: str, field_name: str, limits: ServeLimits) -> None:
    """A prompt over the character limit is refused before it is tokenised (only its end would be used)."""
    if len(text) > limits.max_prompt_chars:
        raise ApiError(
            400, f"{field_name}: the prompt is {len(text)} characters; this server takes at most "
            f"{limits.max_prompt_chars} (--max-prompt-chars)", code="prompt_too_long", param=field_name,
        )


def _check_ids(ids: list[int], field_name: str, vocab_size: int, limits: ServeLimits) -> None:
    """A prompt given as token ids: each one of the tokenizer's, and no more of them than characters a text may have."""
    if len(ids) > limits.max_prompt_chars:
        raise ApiError(
            400, f"{field_name}: the prompt is {len(ids)} tokens; this server takes at most {limits.max_prompt_chars} "
            "(--max-prompt-chars)", code="prompt_too_long", param=field_name,
        )
    outside = next((token for token in ids if not 0 <= token < vocab_size), None)
    if outside is not None:
        raise ApiError(
            400, f"{field_name}: token id {outside} is not in the vocabulary (0 to {vocab_size - 1})", param=field_name
        )


def _model_object(served: ServedModel) -> dict[str, Any]:
    return {"id": served.id, "object": "model", "created": served.created, "owned_by": "hellogpt", **served.facts}


async def _encode(tokenizer: Tokenizer, text: str, field_name: str) -> list[int]:
    """Token ids of a prompt, off the event loop when it is long (a short one is quicker to encode than to hand
    to a thread); an empty text is the end-of-text token where the tokenizer has one, as in chat."""
    try:
        ids = tokenizer.encode(text) if len(text) <= INLINE_ENCODE_CHARS else await run_in_threadpool(tokenizer.encode, text)
        return prompt_or_end_of_text(ids, tokenizer)
    except UserError as error:
        raise ApiError(400, f"{field_name}: {error}", param=field_name) from None


async def _answer(
    request: Request, scheduler: Scheduler, prompts: list[list[int]], settings: SamplingSettings,
    body: Union[CompletionRequest, ChatCompletionRequest], reply: Reply, served: ServedModel,
) -> Response:
    """Submit every prompt's `n` samples and answer with their whole text, or stream them as server-sent events."""
    try:
        handle = scheduler.submit_many(prompts, settings, body.n)
    except UserError as error:
        raise ApiError(503, str(error), "server_error", code="server_shutdown") from None
    except QueueFull as error:
        raise ApiError(429, f"the server is busy: {error}; try again shortly", "server_error", code="queue_full") from None
    dropped = max(0, max(len(prompt) for prompt in prompts) - served.block_size)
    headers = {DROPPED_TOKENS_HEADER: str(dropped)} if dropped else {}
    prompt_tokens = sum(len(prompt) for prompt in prompts)
    window = [prompt for prompt in prompts for _ in range(body.n)]  # each choice's prompt
    if body.stream:
        events = _stream(handle, reply, body.include_usage, prompt_tokens, window)
        return StreamingResponse(
            events, media_type="text/event-stream", headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
    choices = await _collect(request, handle, reply, window)
    counts = usage(prompt_tokens, sum(choice.finished.completion_tokens for choice in choices.values()))
    return JSONResponse(reply.response(choices, counts), headers=headers)


def _prompt_scores(event: PromptScored, prompt: list[int]) -> tuple[TokenLogprob, ...]:
    """A prompt's scores, the tokens that fell out of the window first (unscored: the model never saw them)."""
    dropped = prompt[: len(prompt) - len(event.tokens)]
    return tuple(TokenLogprob(token, None) for token in dropped) + event.tokens


async def _collect(
    request: Request, handle: SequenceHandle, reply: Reply, window: list[list[int]]
) -> dict[int, ChoiceOutput]:
    """Every choice whole; a client that hangs up first cancels its sequences."""
    watcher = asyncio.create_task(_cancel_on_disconnect(request, handle))
    pieces: dict[int, list[str]] = {index: [reply.echoed(index)] for index in range(handle.choices)}
    tokens: dict[int, list[TokenLogprob]] = {index: [] for index in range(handle.choices)}
    choices: dict[int, ChoiceOutput] = {}
    try:
        async for index, event in handle.choice_events():
            if isinstance(event, PromptScored):
                tokens[index].extend(_prompt_scores(event, window[index]))
            elif isinstance(event, TextPiece):
                pieces[index].append(event.text)
                tokens[index].extend(event.tokens)
            elif isinstance(event, Finished):
                choices[index] = ChoiceOutput("".join(pieces[index]), tokens[index], event)
            else:
                raise _failure(event)
    finally:
        watcher.cancel()
        handle.cancel()
    if len(choices) < handle.choices:
        raise ApiError(500, "the reply ended without an outcome", "server_error")
    return choices


async def _cancel_on_disconnect(request: Request, handle: SequenceHandle) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            handle.cancel()
            return


async def _stream(
    handle: SequenceHandle, reply: Reply, include_usage: bool, prompt_tokens: int, window: list[list[int]]
) -> AsyncIterator[str]:
    """Server-sent events: each choice's chunks and its closing chunk with `finish_reason`, usage (if asked) once
    every choice ended, then [DONE]; a failure ends the stream with an error event.

    A client that disconnects closes this generator, and its sequences leave the batch.
    """
    completion_tokens = 0
    try:
        for chunk in reply.opening_chunks(handle.choices):
            yield _event(chunk)
        async for index, event in handle.choice_events():
            if isinstance(event, PromptScored):
                chunk = reply.prompt_chunk(index, _prompt_scores(event, window[index]))
                if chunk is not None:
                    yield _event(chunk)
            elif isinstance(event, TextPiece):
                yield _event(reply.chunk(index, event.text, event.tokens))
            elif isinstance(event, Finished):
                completion_tokens += event.completion_tokens
                yield _event(reply.closing_chunk(index, event))
            else:
                failure = _failure(event)
                yield _event(error_body(failure.message, failure.error_type, failure.code))
                return
        if include_usage:
            yield _event(reply.usage_chunk(usage(prompt_tokens, completion_tokens)))
        yield "data: [DONE]\n\n"
    finally:
        handle.cancel()


def _failure(event: Failed) -> ApiError:
    status = 503 if event.code == "server_shutdown" else 500
    return ApiError(status, event.message, "server_error", code=event.code)


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"
