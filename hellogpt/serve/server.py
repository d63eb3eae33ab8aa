"""Running the app: a socket bound (and its errors told) before anything starts, uvicorn on it, a clean stop.

The socket is bound and listening before the caller announces the URL, so a client that connects at
once waits in the backlog instead of being refused. Ctrl-C (or SIGTERM) ends every sequence in flight
with a `server_shutdown` error event, lets the responses close, and returns: exit code 0. Connections are bounded
(`ServeLimits.max_connections`, then 503), an idle kept-alive one closes after `keep_alive_seconds`, and one whose
request headers take longer than `read_timeout_seconds` is closed (uvicorn times only idle connections).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import signal
import socket
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any, Callable, Optional

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from hellogpt.errors import UserError
from hellogpt.serve.guards import refuse
from hellogpt.serve.limits import RETRY_AFTER_SECONDS, ServeLimits

LISTEN_BACKLOG = 128
# Responses still open this long after Ctrl-C are closed anyway.
GRACEFUL_SHUTDOWN_SECONDS = 5
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host:port` (port 0: any free one); a taken port or unknown host is a UserError."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise UserError(f"--host {host}: not an address of this machine ({error.strerror})") from None
    family, kind, protocol, _, address = infos[0]
    sock = socket.socket(family, kind, protocol)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} on {host} is already in use: choose another with --port") from None
        raise UserError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    sock.set_inheritable(True)
    return sock


def socket_url(sock: socket.socket) -> str:
    """http://host:port/ of a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def is_loopback(host: str) -> bool:
    """Whether `host` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_server(
    app: Any, on_stop: Callable[[], None], on_ready: Callable[[], None] = lambda: None,
    limits: ServeLimits = ServeLimits(),
) -> uvicorn.Server:
    """A quiet uvicorn server for `app`; run it with `.run(sockets=[sock])`, stop it with `.should_exit = True`.

    `on_ready` runs once the server accepts requests and the stop signals are caught (announce the URL then);
    `on_stop` runs first thing on a stop signal (keep it lock-free).
    """
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        http=_bounded_protocol(limits), timeout_keep_alive=limits.keep_alive_seconds,
    )
    return _StoppableServer(config, on_stop, on_ready)


def _bounded_protocol(limits: ServeLimits) -> type[H11Protocol]:
    """uvicorn's h11 protocol, answering a connection beyond `max_connections` with OpenAI's 503 (uvicorn's own
    limit answers in plain text), and closing one whose request line and headers are not in within the read timeout."""
    seconds = limits.read_timeout_seconds

    class BoundedH11Protocol(H11Protocol):
        _deadline: Optional[asyncio.TimerHandle] = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:  # this one included
                self.app = _too_many_connections(limits.max_connections)
            self._deadline = self.loop.call_later(seconds, self._headers_too_slow)

        def data_received(self, data: bytes) -> None:
            if self._deadline is None and (self.cycle is None or self.cycle.response_complete):
                self._deadline = self.loop.call_later(seconds, self._headers_too_slow)  # the next request begins
            super().data_received(data)
            if self.cycle is not None and not self.cycle.response_complete:
                self._disarm()  # its headers are in: the body's deadline is BodyLimit's

        def connection_lost(self, exc: Optional[Exception]) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _headers_too_slow(self) -> None:
            self._deadline = None
            if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
                self.transport.close()

    return BoundedH11Protocol


def _too_many_connections(limit: int) -> Callable[..., Any]:
    async def refuse_connection(scope: Any, receive: Any, send: Any) -> None:
        message = f"the server has {limit} connections open, its limit (--max-connections): try again shortly"
        await refuse(send, 503, message, code="too_many_connections", error_type="server_error", close=True,
                     headers=((b"retry-after", str(RETRY_AFTER_SECONDS).encode()),))

    return refuse_connection


class _StoppableServer(uvicorn.Server):
    """uvicorn's server, telling us when it is ready and when a stop signal comes, and returning normally after that
signal (uvicorn's own re-raises it)."""

    def __init__(self, config: uvicorn.Config, on_stop: Callable[[], None], on_ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_stop = on_stop
        self._on_ready = on_ready

    async def startup(self, sockets: Optional[list[socket.socket]] = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_ready()

    def handle_exit(self, sig: int, frame: Optional[FrameType]) -> None:
        self._on_stop()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
