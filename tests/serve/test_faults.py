"""A failure while decoding one request fails that request alone; one outside the step fails them all, says so on
/health and stops the server with a non-zero exit; a request abandoned in the queue ends at once."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from hellogpt.decode.cache import prefill_slot as real_prefill
from hellogpt.serve import batching
from tests.serve.conftest import LiveServer, StartServer, char_tokenizer
from tests.serve.test_bad_requests import assert_still_serving
from tests.serve.test_batching import slow_steps, stream_completion
from tests.cli.test_serve import STARTUP_SECONDS, URL_PATTERN, Output, checkpoint  # noqa: F401 (a fixture)

GOOD = ["the raven", "once upon", "quoth", "nevermore"]
POISON = "poison"
WAIT_SECONDS = 30


def poison_prefills(monkeypatch: pytest.MonkeyPatch, spare_first: bool = False) -> None:
    """A prefill of the poison prompt runs out of memory, as a long prompt might (`spare_first`: not its first)."""
    poison_ids = char_tokenizer().encode(POISON)
    spared: list[int] = []

    def prefill(model, cache, slot, context):
        if list(context[: len(poison_ids)]) == poison_ids:
            if spare_first and not spared:
                spared.append(slot)
            else:
                raise RuntimeError("out of memory (injected)")
        return real_prefill(model, cache, slot, context)

    monkeypatch.setattr(batching, "prefill_slot", prefill)


def wait_for(condition: Callable[[], bool], within_seconds: float = WAIT_SECONDS) -> bool:
    deadline = time.monotonic() + within_seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return False


async def stream_events(client: httpx.AsyncClient, prompt: str, max_tokens: int) -> tuple[int, list[dict]]:
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    async with client.stream("POST", "v1/completions", json=body) as response:
        lines = [line async for line in response.aiter_lines()]
    return response.status_code, [json.loads(line[6:]) for line in lines if line.startswith("data: {")]


def greedy_alone(server: LiveServer, prompts: list[str], max_tokens: int) -> list[str]:
    async def run() -> list[str]:
        async with httpx.AsyncClient(base_url=server.url, timeout=WAIT_SECONDS) as client:
            return [await stream_completion(client, prompt, max_tokens) for prompt in prompts]

    return asyncio.run(run())


def assert_injected_failure(event: dict) -> None:
    assert event["error"]["code"] == "server_error" and event["error"]["type"] == "server_error"
    assert "out of memory (injected)" in event["error"]["message"]


def test_a_request_that_fails_in_its_prefill_fails_alone_while_the_others_finish(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    server = start_server()
    alone = greedy_alone(server, GOOD, 40)
    poison_prefills(monkeypatch)
    slow_steps(monkeypatch, 0.005)

    async def run():
        async with httpx.AsyncClient(base_url=server.url, timeout=WAIT_SECONDS) as client:
            good = [asyncio.create_task(stream_completion(client, prompt, 40)) for prompt in GOOD]
            while server.scheduler.load["active"] < len(GOOD):
                await asyncio.sleep(0.002)
            streamed = await stream_events(client, POISON, 10)
            plain = await client.post("v1/completions", json={"prompt": POISON, "max_tokens": 10})
            return await asyncio.gather(*good), streamed, plain

    together, (status, events), plain = asyncio.run(run())
    assert together == alone
    assert status == 200
    assert_injected_failure(events[-1])
    assert plain.status_code == 500
    assert_injected_failure(plain.json())
    assert_still_serving(server)
    assert "Traceback" not in capfd.readouterr().err


def test_a_batched_step_that_fails_goes_on_sequence_by_sequence(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_server()
    alone = greedy_alone(server, GOOD, 20)
    poison_prefills(monkeypatch, spare_first=True)  # admitted; then every step it is in fails, and its retry
    poison_id = char_tokenizer().encode(POISON)[0]
    original = batching.decode_step

    def decode_step(model, cache, tokens, **layout):
        if any(server.scheduler._active[slot].context[0] == poison_id for slot in tokens):
            raise RuntimeError("a bug (injected)")
        return original(model, cache, tokens, **layout)

    monkeypatch.setattr(batching, "decode_step", decode_step)

    async def run():
        async with httpx.AsyncClient(base_url=server.url, timeout=WAIT_SECONDS) as client:
            poison = asyncio.create_task(stream_events(client, POISON, 10))
            good = await asyncio.gather(*(stream_completion(client, prompt, 20) for prompt in GOOD))
            return good, await poison

    together, (_, events) = asyncio.run(run())
    assert together == alone
    assert_injected_failure(events[-1])
    assert_still_serving(server)


def break_release_once_requests_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug outside any one sequence's decoding: freeing finished slots raises once requests are active."""
    original = batching.Scheduler._release_finished

    def broken(self) -> None:
        if self._active:
            raise KeyError("injected")
        original(self)

    monkeypatch.setattr(batching.Scheduler, "_release_finished", broken)


def test_a_failure_outside_the_step_ends_every_request_and_health_says_503(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_steps(monkeypatch, 0.005)
    server = start_server(max_batch=1)
    server.scheduler.on_failure = lambda: None  # the server goes on answering, so that /health can be read
    break_release_once_requests_run(monkeypatch)

    async def run():
        async with httpx.AsyncClient(base_url=server.url, timeout=WAIT_SECONDS) as client:
            streamed = asyncio.create_task(stream_events(client, "the raven", 100))
            waiting = asyncio.create_task(client.post("v1/completions", json={"prompt": "quoth", "max_tokens": 5}))
            return await streamed, await waiting

    (_, events), waiting = asyncio.run(run())
    assert events[-1]["error"]["code"] == "server_error"
    assert "the generation thread failed (KeyError: 'injected')" in events[-1]["error"]["message"]
    assert waiting.status_code == 500 and "generation thread failed" in waiting.json()["error"]["message"]
    health = httpx.get(server.url + "health")
    assert health.status_code == 503
    assert health.json()["status"] == "failed" and "KeyError" in health.json()["error"]
    refused = httpx.post(server.api + "/completions", json={"prompt": "the"})
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "server_shutdown"


def test_after_such_a_failure_the_server_stops(start_server: StartServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server = start_server()
    break_release_once_requests_run(monkeypatch)
    reply = httpx.post(server.api + "/completions", json={"prompt": "the"}, timeout=WAIT_SECONDS)
    assert reply.status_code == 500
    assert wait_for(lambda: server.server.should_exit)


def test_a_plain_request_abandoned_in_the_queue_ends_and_leaves_it(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_steps(monkeypatch, 0.01)
    server = start_server(max_batch=1)
    handlers = server.server.server_state.tasks

    async def run() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=WAIT_SECONDS) as client:
            # 8192 tokens hold the only slot for 80 s.
            holder = asyncio.create_task(client.post("v1/completions", json={"prompt": "the", "max_tokens": 8192}))
            while server.scheduler.load["active"] < 1:
                await asyncio.sleep(0.005)
            with pytest.raises(httpx.ReadTimeout):
                await client.post("v1/completions", json={"prompt": "quoth", "max_tokens": 5}, timeout=0.5)
            left = await asyncio.to_thread(wait_for, lambda: server.scheduler.load["waiting"] == 0 and len(handlers) == 1)
            assert left, (server.scheduler.load, len(handlers))
            holder.cancel()

    asyncio.run(run())
    assert wait_for(lambda: server.scheduler.load["active"] == 0 and not handlers)


BROKEN_SERVE = """\
import sys
from hellogpt.serve import batching
original = batching.Scheduler._release_finished
def broken(self):
    if self._active:
        raise KeyError('injected')
    original(self)
batching.Scheduler._release_finished = broken
from hellogpt.cli import app
app(args=sys.argv[1:], prog_name='hellogpt')
"""


@pytest.mark.slow
def test_the_process_exits_1_with_one_line_when_the_generation_thread_fails(checkpoint: Path, tmp_path: Path) -> None:  # noqa: F811
    script = tmp_path / "broken_serve.py"
    script.write_text(BROKEN_SERVE)
    process = subprocess.Popen(
        [sys.executable, str(script), "serve", "-k", str(checkpoint), "--port", "0", "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output = Output(process)
    try:
        url = URL_PATTERN.search("\n".join(output.until(URL_PATTERN))).group(1)
        reply = httpx.post(url + "v1/completions", json={"prompt": "the"}, timeout=STARTUP_SECONDS)
        assert reply.status_code == 500 and "generation thread failed" in reply.json()["error"]["message"]
        assert process.wait(STARTUP_SECONDS) == 1
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
    rest = output.rest()
    process.stdout.close()
    assert rest.splitlines()[-1] == (
        "error: the generation thread failed (KeyError: 'injected'): every request was ended and the server stopped"
    )
    assert "Traceback" not in rest
