"""The server under abuse, all at once on loopback: 200 concurrent clients, 20 bodies of 50 MB, 50 streams cut
mid-reply and one request that fails inside the step. Every well-formed request gets its greedy text from alone,
nothing is a 500, the process's memory grows by less than RSS_GROWTH_BOUND, and nothing is left running."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import psutil
import pytest

from tests.serve.conftest import StartServer
from tests.serve.test_faults import POISON, assert_injected_failure, greedy_alone, poison_prefills, stream_events, wait_for
from tests.serve.test_limits import parse_response, send_huge_body

PROMPTS = ["the raven", "once upon", "quoth", "nevermore", "a", "dreary", "midnight, ", "lenore?", "tapping", "rare"]
MAX_TOKENS = 12
CLIENTS = 200
HUGE_BODIES = 20
HUGE_BODY_BYTES = 50 * 1024 * 1024
CUT_STREAMS = 50
# The server shares this process (its model is 0.1 MB); 20 bodies read whole would take 1 GB.
RSS_GROWTH_BOUND = 150 * 1024 * 1024
WAIT_SECONDS = 60


class PeakMemory:
    """The process's resident memory, sampled on a thread every few milliseconds while in the block."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.baseline = self.peak = self.process.memory_info().rss
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


async def well_formed(client: httpx.AsyncClient, index: int) -> tuple[str, str, int]:
    """(prompt, text, status) of a greedy completion, streamed for odd clients, plain for even ones."""
    prompt = PROMPTS[index % len(PROMPTS)]
    body = {"prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0, "stream": index % 2 == 1}
    if not body["stream"]:
        reply = await client.post("v1/completions", json=body)
        return prompt, reply.json()["choices"][0]["text"] if reply.status_code == 200 else reply.text, reply.status_code
    pieces: list[str] = []
    async with client.stream("POST", "v1/completions", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[len("data: "):])
                pieces.append(chunk["choices"][0]["text"] if "choices" in chunk else json.dumps(chunk))
    return prompt, "".join(pieces), response.status_code


async def cut_stream(client: httpx.AsyncClient, index: int) -> int:
    """A long stream whose client hangs up after its first text."""
    body = {"prompt": PROMPTS[index % len(PROMPTS)], "max_tokens": 2000, "stream": True}
    async with client.stream("POST", "v1/completions", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["text"]:
                break
    return response.status_code


@pytest.mark.slow
def test_the_server_holds_under_abuse(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    server = start_server()
    alone = dict(zip(PROMPTS, greedy_alone(server, PROMPTS, MAX_TOKENS)))
    poison_prefills(monkeypatch)
    threads_before = threading.active_count()

    async def abuse():
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=server.url, timeout=WAIT_SECONDS, limits=limits) as client:
            huge = [
                asyncio.to_thread(send_huge_body, server, HUGE_BODY_BYTES if index % 2 else None, HUGE_BODY_BYTES)
                for index in range(HUGE_BODIES)
            ]
            return await asyncio.gather(
                asyncio.gather(*(well_formed(client, index) for index in range(CLIENTS))),
                asyncio.gather(*huge),
                asyncio.gather(*(cut_stream(client, index) for index in range(CUT_STREAMS))),
                stream_events(client, POISON, MAX_TOKENS),
            )

    started = time.monotonic()
    with PeakMemory() as memory:
        replies, refusals, cut, (poison_status, poison_events) = asyncio.run(abuse())
    seconds = time.monotonic() - started

    assert [status for _, _, status in replies] == [200] * CLIENTS
    assert [text for _, text, _ in replies] == [alone[prompt] for prompt, _, _ in replies]
    for raw, sent in refusals:
        status, _, error = parse_response(raw)
        assert status == 413 and error["error"]["code"] == "request_too_large"
        assert sent < HUGE_BODY_BYTES // 4  # refused long before the end of the body
    assert cut == [200] * CUT_STREAMS
    assert poison_status == 200
    assert_injected_failure(poison_events[-1])
    assert memory.growth < RSS_GROWTH_BOUND, f"RSS grew by {memory.growth / 2**20:.0f} MB"
    assert wait_for(lambda: server.scheduler.load["active"] == server.scheduler.load["waiting"] == 0)
    assert wait_for(lambda: not server.server.server_state.tasks and not server.server.server_state.connections)
    assert threading.active_count() == threads_before
    assert httpx.get(server.url + "health").json()["status"] == "ok"
    logged = capfd.readouterr().err
    assert "Traceback" not in logged and "ERROR" not in logged, logged[-2000:]
    print(f"abuse: {seconds:.1f} s, RSS grew by {memory.growth / 2**20:.0f} MB")
