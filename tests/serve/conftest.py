"""A live server in this process: a tiny char-level model behind the real app and uvicorn, on a free local port.

`start_server(...)` returns a `LiveServer` (its base URL and scheduler); every server started in a test is
stopped at the end of it, its thread joined, so nothing is left running.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Callable, Optional

import pytest
import uvicorn

from hellogpt.config.schema import SampleConfig
from hellogpt.data.chat_template import turn_end_id
from hellogpt.data.tokenizer import CharTokenizer, Tokenizer
from hellogpt.model.gpt import GPT
from hellogpt.serve.app import ServedModel, create_app
from hellogpt.serve.batching import Scheduler
from hellogpt.serve.limits import ServeLimits
from hellogpt.serve.server import bind_socket, build_server, socket_url
from tests.test_generate import make_model

# The chat transcript needs ':' beside the letters.
CHARS = "\n !',.:?abcdefghijklmnopqrstuvwxyz"
MODEL_ID = "tiny"
STARTUP_TIMEOUT_SECONDS = 10


def char_tokenizer() -> CharTokenizer:
    return CharTokenizer(CHARS)


def tiny_model(tokenizer: Tokenizer, block_size: int = 32) -> GPT:
    """A 2-layer, 32-wide GPT whose greedy text varies (see tests/test_generate.make_model)."""
    return make_model(block_size=block_size, vocab_size=tokenizer.vocab_size)


@dataclass
class LiveServer:
    url: str
    scheduler: Scheduler
    server: uvicorn.Server

    @property
    def api(self) -> str:
        return self.url + "v1"


StartServer = Callable[..., LiveServer]


@pytest.fixture()
def start_server() -> Iterator[StartServer]:
    """Start servers on 127.0.0.1:<free port>; all are stopped when the test ends."""
    yield from _servers()


@pytest.fixture(scope="module")
def shared_server() -> Iterator[LiveServer]:
    """One server for a whole module's tests that each leave it as they found it (refused requests, say)."""
    servers = _servers()
    yield next(servers)()
    next(servers, None)


def _servers() -> Iterator[StartServer]:
    """Yields a function that starts servers, then (resumed) stops every server it started."""
    stops: list[Callable[[], None]] = []

    def start(
        model: Optional[GPT] = None, tokenizer: Optional[Tokenizer] = None, *, max_batch: int = 8,
        api_key: Optional[str] = None, defaults: Optional[SampleConfig] = None, limits: ServeLimits = ServeLimits(),
        allowed_origins: tuple[str, ...] = (), chat_template: Optional[str] = None,
        scoring_model: Optional[GPT] = None,
    ) -> LiveServer:
        tokenizer = tokenizer or char_tokenizer()
        model = model or tiny_model(tokenizer)
        eot_id = turn_end_id(tokenizer) if chat_template is not None else None
        scheduler = Scheduler(
            model, tokenizer, max_batch, max_waiting=limits.max_waiting, eot_id=eot_id, scoring_model=scoring_model
        )
        served = ServedModel(MODEL_ID, model.config.block_size, {"tokenizer": tokenizer.name}, chat_template=chat_template)
        app = create_app(
            scheduler, tokenizer, served, defaults or SampleConfig(max_new_tokens=20), api_key, limits,
            allowed_origins=allowed_origins,
        )
        sock = bind_socket("127.0.0.1", 0)
        server = build_server(app, on_stop=scheduler.request_stop, limits=limits)
        scheduler.on_failure = lambda: setattr(server, "should_exit", True)
        scheduler.start()
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()

        def stop() -> None:
            server.should_exit = True
            scheduler.stop(timeout=STARTUP_TIMEOUT_SECONDS)
            thread.join(STARTUP_TIMEOUT_SECONDS)
            sock.close()
            assert not thread.is_alive(), "the server thread did not stop"

        stops.append(stop)
        return LiveServer(socket_url(sock), scheduler, server)

    yield start
    for stop in reversed(stops):
        stop()


@pytest.fixture()
def server(start_server: StartServer) -> LiveServer:
    """The tiny char-level model served with the defaults: 8 slots, no key, 20 new tokens unless asked."""
    return start_server()
