"""The server's bounds on what one client may ask: each refused with OpenAI's error object naming the field and limit."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Optional

import httpx
import pytest

from hellogpt.serve.limits import MAX_STOP_CHARS, ServeLimits
from tests.serve.conftest import LiveServer, StartServer
from tests.serve.test_bad_requests import COMPLETIONS, CHAT, assert_still_serving, post
from tests.serve.test_batching import slow_steps

MEGABYTE = 1024 * 1024
REPLY_SECONDS = 30


def address(server: LiveServer) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    return host, int(port)


def send_huge_body(server: LiveServer, declared: Optional[int], total: int, chunk: int = 256 * 1024) -> tuple[bytes, int]:
    """POST a body of `total` bytes over a raw socket (with Content-Length `declared`, or chunked when None),
    stopping as soon as the server answers or closes; (the response's bytes, the body bytes sent)."""
    sock = socket.create_connection(address(server), timeout=REPLY_SECONDS)
    length = f"Content-Length: {declared}" if declared is not None else "Transfer-Encoding: chunked"
    head = f"POST /v1/completions HTTP/1.1\r\nHost: {server.url[7:-1]}\r\nContent-Type: application/json\r\n{length}\r\n\r\n"
    sent = 0
    try:
        sock.sendall(head.encode())
        piece = b"a" * chunk
        sock.setblocking(False)
        while sent < total:
            try:  # an answer already waiting ends the upload
                if sock.recv(1, socket.MSG_PEEK):
                    break
            except BlockingIOError:
                pass
            frame = piece if declared is not None else f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
            try:
                sock.settimeout(1.0)
                sock.sendall(frame)
            except (BrokenPipeError, ConnectionResetError):
                break
            except socket.timeout:  # the server stopped reading: its answer is coming
                break
            sent += len(piece)
            sock.setblocking(False)
        return read_response(sock), sent
    finally:
        sock.close()


def read_response(sock: socket.socket) -> bytes:
    """A JSON response's bytes, read until its body is complete or the server closes."""
    sock.settimeout(REPLY_SECONDS)
    response = b""
    while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        response += data
    return response


def parse_response(raw: bytes) -> tuple[int, dict[str, str], dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {name.lower(): value for name, value in headers.items()}, json.loads(body)


def assert_openai_error(error: dict, param: Optional[str], *words: str) -> None:
    assert set(error["error"]) == {"message", "type", "param", "code"}
    assert error["error"]["param"] == param
    for word in words:
        assert word in error["error"]["message"]


def test_a_body_declared_over_the_limit_is_413_before_it_is_read(server: LiveServer) -> None:
    raw, sent = send_huge_body(server, declared=50 * MEGABYTE, total=50 * MEGABYTE)
    status, headers, error = parse_response(raw)
    assert status == 413 and headers["connection"] == "close"
    assert_openai_error(error, None, "4194304 bytes", "--max-body-bytes")
    assert sent < 8 * MEGABYTE  # refused from the header: what was sent is what the sockets buffered
    assert_still_serving(server)


def test_a_chunked_body_is_413_as_soon_as_it_passes_the_limit(start_server: StartServer) -> None:
    server = start_server(limits=ServeLimits(max_body_bytes=MEGABYTE))
    raw, sent = send_huge_body(server, declared=None, total=50 * MEGABYTE)
    status, _, error = parse_response(raw)
    assert status == 413
    assert_openai_error(error, None, "1048576 bytes")
    assert sent < 8 * MEGABYTE
    assert_still_serving(server)


def test_a_body_just_under_the_limit_is_read(start_server: StartServer) -> None:
    server = start_server(limits=ServeLimits(max_body_bytes=1000))
    body = {"prompt": "the", "max_tokens": 2, "user": "x" * 900}
    assert post(server, COMPLETIONS, body).status_code == 200
    assert post(server, COMPLETIONS, {**body, "user": "x" * 1000}).status_code == 413


def test_a_body_that_trickles_in_slower_than_the_read_timeout_is_408(start_server: StartServer) -> None:
    server = start_server(limits=ServeLimits(read_timeout_seconds=0.5))
    with socket.create_connection(address(server), timeout=REPLY_SECONDS) as sock:
        sock.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: {server.url[7:-1]}\r\nContent-Length: 100\r\n\r\n{{".encode())
        raw = read_response(sock)  # nothing more is sent: the server answers when its deadline passes
    status, headers, error = parse_response(raw)
    assert status == 408 and headers["connection"] == "close"
    assert_openai_error(error, None, "0.5 s", "--read-timeout")


def test_a_connection_whose_headers_never_end_is_closed(start_server: StartServer) -> None:
    server = start_server(limits=ServeLimits(read_timeout_seconds=0.5))
    with socket.create_connection(address(server), timeout=REPLY_SECONDS) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
        assert sock.recv(65536) == b""  # closed by the server, not by this client's timeout (which would raise)


def test_a_prompt_over_the_character_limit_is_refused_before_tokenising(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_server(limits=ServeLimits(max_prompt_chars=100))
    encoded: list[str] = []
    original = server.scheduler.tokenizer.encode
    monkeypatch.setattr(server.scheduler.tokenizer, "encode", lambda text: encoded.append(text) or original(text))
    reply = post(server, COMPLETIONS, {"prompt": "a" * 101})
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "prompt_too_long"
    assert_openai_error(reply.json(), "prompt", "101 characters", "at most 100", "--max-prompt-chars")
    assert encoded == []
    chat = post(server, CHAT, {"messages": [{"role": "user", "content": "a" * 95}]})  # with "user: " and "assistant:"
    assert chat.status_code == 400
    assert_openai_error(chat.json(), "messages", "--max-prompt-chars")
    assert post(server, COMPLETIONS, {"prompt": "a" * 100, "max_tokens": 2}).status_code == 200


def test_too_many_messages_are_refused(start_server: StartServer) -> None:
    server = start_server(limits=ServeLimits(max_messages=3))
    messages = [{"role": "user", "content": "hi"}] * 4
    reply = post(server, CHAT, {"messages": messages})
    assert reply.status_code == 400
    assert_openai_error(reply.json(), "messages", "4 messages", "at most 3", "--max-messages")
    assert post(server, CHAT, {"messages": messages[:3], "max_tokens": 2}).status_code == 200


def test_a_stop_string_over_the_length_limit_is_refused(server: LiveServer) -> None:
    reply = post(server, COMPLETIONS, {"prompt": "the", "stop": ["a" * (MAX_STOP_CHARS + 1)]})
    assert reply.status_code == 400
    assert_openai_error(reply.json(), "stop", f"at most {MAX_STOP_CHARS} characters")


def test_a_full_queue_is_429_with_retry_after_and_the_queue_drains(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_steps(monkeypatch, 0.01)
    server = start_server(max_batch=1, limits=ServeLimits(max_waiting=2))

    async def run() -> tuple[list[int], httpx.Response]:
        async with httpx.AsyncClient(base_url=server.api, timeout=REPLY_SECONDS) as client:
            body = {"prompt": "the", "max_tokens": 30}
            first = asyncio.create_task(client.post("/completions", json=body))
            while server.scheduler.load["active"] < 1:
                await asyncio.sleep(0.005)
            waiting = [asyncio.create_task(client.post("/completions", json=body)) for _ in range(2)]
            while server.scheduler.load["waiting"] < 2:
                await asyncio.sleep(0.005)
            refused = await client.post("/completions", json=body)
            replies = await asyncio.gather(first, *waiting)
            return [reply.status_code for reply in replies], refused

    statuses, refused = asyncio.run(run())
    assert statuses == [200, 200, 200]
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"
    assert refused.json()["error"]["code"] == "queue_full"
    assert "--max-waiting 2" in refused.json()["error"]["message"]
    assert_still_serving(server)


def test_connections_over_the_limit_are_503(start_server: StartServer) -> None:
    server = start_server(limits=ServeLimits(max_connections=2))
    idle = [socket.create_connection(address(server)) for _ in range(2)]
    try:
        deadline = time.monotonic() + REPLY_SECONDS
        while len(server.server.server_state.connections) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        refused = httpx.get(server.url + "health")
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert_openai_error(refused.json(), None, "2 connections", "--max-connections")
    finally:
        for sock in idle:
            sock.close()
