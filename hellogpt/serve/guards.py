"""Two ASGI layers in front of the routes: a bounded request body, and a local server only its own pages can reach.

`BodyLimit` refuses a body over the size limit from its Content-Length before reading any of it, or as soon as a
chunked body passes the limit, and one that does not arrive within the read timeout; it then hands the routes
the whole body at once. `LocalOnly` answers, on a keyless server, only requests whose `Host` names this machine
(a DNS-rebinding page names its own host) and no cross-origin browser request (a drive-by page: Ollama's
CVE-2024-28224 was both), except from the origins `--allow-origin` opens, which also get CORS headers.
Every refusal is OpenAI's error object, sent with `Connection: close` where the body was not read.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Optional
from urllib.parse import urlsplit

from hellogpt.serve.protocol import error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK_NAMES = frozenset({"localhost"})
CORS_MAX_AGE_SECONDS = 600
# The page a server serves itself; a link to it from another site is an ordinary navigation.
PAGE_PATH = "/"


class BodyLimit:
    """Reads each request's body, at most `max_bytes` of it within `read_seconds`, before the routes see it."""

    def __init__(self, app: App, max_bytes: int, read_seconds: float) -> None:
        self.app, self.max_bytes, self.read_seconds = app, max_bytes, read_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _headers(scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(send, f"is {int(declared)} bytes")
            return
        try:
            body = await asyncio.wait_for(self._read(receive), self.read_seconds)
        except _TooLarge:
            await self._too_large(send, "passed that while it was read")
            return
        except asyncio.TimeoutError:
            message = f"the request body did not arrive within {self.read_seconds:g} s (--read-timeout)"
            await refuse(send, 408, message, code="request_timeout", close=True)
            return
        except _Disconnected:
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()  # after the body: the client's disconnect, when it comes
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_large(self, send: Send, how: str) -> None:
        message = f"the request body {how}: this server takes at most {self.max_bytes} bytes (--max-body-bytes)"
        await refuse(send, 413, message, code="request_too_large", close=True)


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


class LocalOnly:
    """Refuses requests a browser may send on behalf of another site; adds CORS headers for `allowed_origins`.

    `check_host`: only a loopback name or address in `Host` (a keyless server bound to loopback).
    `check_origin`: no `Origin` but the server's own, no `Sec-Fetch-Site: cross-site` (a keyless server).
    `allowed_origins`: origins let through anyway, with CORS headers (`*`: any).
    """

    def __init__(self, app: App, check_host: bool, check_origin: bool, allowed_origins: tuple[str, ...] = ()) -> None:
        self.app, self.check_host, self.check_origin = app, check_host, check_origin
        self.allowed_origins = frozenset(origin.rstrip("/") for origin in allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        host, origin = headers.get("host"), headers.get("origin")
        if self.check_host and host is not None and not is_loopback_host(host):
            message = (f"Host {host!r} is not this machine: a server without --api-key on a loopback address answers "
                       "only requests to localhost, 127.0.0.1 or [::1]")
            await refuse(send, 403, message, code="host_not_allowed")
            return
        allowed = origin is not None and ("*" in self.allowed_origins or origin in self.allowed_origins)
        if scope["method"] == "OPTIONS" and origin is not None and "access-control-request-method" in headers:
            await self._preflight(send, origin, allowed, headers.get("access-control-request-headers"))
            return
        if self.check_origin and not allowed and self._from_another_site(scope, headers, host, origin):
            message = (f"a cross-origin request (Origin {origin or 'not sent'}, Sec-Fetch-Site "
                       f"{headers.get('sec-fetch-site', 'not sent')}) to a server without --api-key: start it with "
                       "--allow-origin ORIGIN to let that page use it")
            await refuse(send, 403, message, code="origin_not_allowed")
            return
        if allowed:
            send = _with_cors(send, self._allow_origin_value(origin))
        await self.app(scope, receive, send)

    def _from_another_site(self, scope: Scope, headers: dict[str, str], host: Optional[str], origin: Optional[str]) -> bool:
        if origin is not None:
            return host is None or origin != f"{scope.get('scheme', 'http')}://{host}"
        cross_site = headers.get("sec-fetch-site") == "cross-site"
        return cross_site and not (scope["method"] == "GET" and scope["path"] == PAGE_PATH)

    async def _preflight(self, send: Send, origin: str, allowed: bool, asked_headers: Optional[str]) -> None:
        if not allowed:
            message = f"the origin {origin} may not call this server: start it with --allow-origin {origin}"
            await refuse(send, 403, message, code="origin_not_allowed")
            return
        cors = [
            (b"access-control-allow-origin", self._allow_origin_value(origin).encode()),
            (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
            (b"access-control-allow-headers", (asked_headers or "authorization, content-type").encode("latin-1")),
            (b"access-control-max-age", str(CORS_MAX_AGE_SECONDS).encode()),
            (b"vary", b"Origin"),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": cors})
        await send({"type": "http.response.body", "body": b""})

    def _allow_origin_value(self, origin: str) -> str:
        return "*" if "*" in self.allowed_origins else origin


def is_loopback_host(host: str) -> bool:
    """Whether a `Host` header (name or address, with or without a port) names this machine's loopback."""
    try:
        name = urlsplit(f"//{host}").hostname
    except ValueError:
        return False
    if name is None:
        return False
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _with_cors(send: Send, allow_origin: str) -> Send:
    async def send_with_cors(message: Message) -> None:
        if message["type"] == "http.response.start":
            extra = [(b"access-control-allow-origin", allow_origin.encode()), (b"vary", b"Origin")]
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return send_with_cors


async def refuse(
    send: Send, status: int, message: str, *, code: str, param: Optional[str] = None,
    error_type: str = "invalid_request_error", close: bool = False, headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    """Answer with OpenAI's error object; `close` ends the connection after it (the body was not read)."""
    body = json.dumps(error_body(message, error_type, code, param)).encode()
    response_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    if close:
        response_headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": body})


def _headers(scope: Scope) -> dict[str, str]:
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers", [])}
