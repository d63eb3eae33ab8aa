"""Continuous batching seen from clients: concurrent requests share steps, and nobody's text depends on the others'."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import torch

from hellogpt.errors import UserError
from hellogpt.serve import batching
from hellogpt.serve import events as serve_events
from hellogpt.serve import steps
from hellogpt.decode import step as lean
from hellogpt.decode.cache import BatchedKVCache, prefill_slot
from hellogpt.decode.step import DecodingModel, decode_step
from hellogpt.serve.steps import StepLayout
from tests.serve.conftest import LiveServer, StartServer, char_tokenizer, tiny_model

PROMPTS = ["the raven", "once upon", "quoth", "nevermore", "a", "dreary", "midnight, ", "lenore?"]
# Different lengths: sequences leave the batch at different steps while the others go on; 40+ tokens slide the
# 32-token window.
MAX_TOKENS = [40, 7, 25, 50, 3, 33, 18, 45]
# Waits on a condition end as soon as it holds; this long only guards against a hang.
HANG_GUARD_SECONDS = 60


async def stream_completion(client: httpx.AsyncClient, prompt: str, max_tokens: int) -> str:
    """The text of one greedy streamed completion, read chunk by chunk."""
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    pieces: list[str] = []
    async with client.stream("POST", "v1/completions", json=body) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                pieces.append(json.loads(line[len("data: "):])["choices"][0]["text"])
    return "".join(pieces)


async def alone_then_together(server: LiveServer, prompts: list[str], max_tokens: list[int]) -> tuple[list[str], list[str]]:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        alone = [await stream_completion(client, prompt, count) for prompt, count in zip(prompts, max_tokens)]
        together = await asyncio.gather(*(stream_completion(client, p, n) for p, n in zip(prompts, max_tokens)))
    return alone, list(together)


def record_batch_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sizes: list[int] = []
    original = batching.decode_step

    def recording(model, cache, tokens, **layout):
        sizes.append(len(tokens))
        return original(model, cache, tokens, **layout)

    monkeypatch.setattr(batching, "decode_step", recording)
    return sizes


def test_eight_concurrent_streams_share_steps_and_each_gets_its_greedy_text_from_alone(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = record_batch_sizes(monkeypatch)
    alone, together = asyncio.run(alone_then_together(server, PROMPTS, MAX_TOKENS))
    assert together == alone
    assert [len(text) for text in together] == MAX_TOKENS
    assert max(sizes) > 1  # decoded together, not one after another


@pytest.mark.parametrize(
    "layout", [StepLayout(chunk=None, min_rows=8), StepLayout(chunk=1, min_rows=1), StepLayout(chunk=2, min_rows=1)]
)
def test_greedy_text_is_the_same_alone_and_together_in_every_step_layout(
    layout: StepLayout, start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batching, "measure_step_layout", lambda model, max_batch, measure=None: layout)
    server = start_server()
    assert server.scheduler.layout == layout
    alone, together = asyncio.run(alone_then_together(server, PROMPTS, MAX_TOKENS))
    assert together == alone


def test_the_probe_finds_the_fewest_rows_that_keep_every_row_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    decoding = DecodingModel(tiny_model(char_tokenizer()))
    measured = steps.batch_invariant_row_floor(decoding, 8)
    assert measured is not None and measured == steps.batch_invariant_row_floor(decoding, 8)  # deterministic
    plain_head = decoding.head
    # A head whose rows shift for products under 4 rows, as a kernel that blocks differently there would.
    monkeypatch.setattr(decoding, "head", lambda rows, chunk: plain_head(rows, chunk) + 1e-3 * (rows.size(0) < 4))
    assert steps.batch_invariant_row_floor(decoding, 8) == max(4, measured)
    assert steps.chunk_keeps_rows_alike(decoding, 2, 8) is False  # its 2-row products differ from its 8-row ones
    assert steps.measure_step_layout(decoding, 8) in {StepLayout(None, max(4, measured)), StepLayout(1, 1)}
    # A head whose rows depend on their place: no single product is safe, a row per product is.
    monkeypatch.setattr(
        decoding, "head", lambda rows, chunk: plain_head(rows, chunk) + 1e-3 * torch.arange(rows.size(0))[:, None]
    )
    assert steps.batch_invariant_row_floor(decoding, 8) is None
    assert steps.chunk_keeps_rows_alike(decoding, 2, 8) is False
    assert steps.measure_step_layout(decoding, 8) == StepLayout(chunk=1, min_rows=1)


def test_steps_top_live_sequences_up_with_idle_slots_to_the_layouts_rows() -> None:
    assert steps.step_rows([5], slots=8, layout=StepLayout(None, 1)) == [5]
    assert steps.step_rows([5], slots=8, layout=StepLayout(None, 2)) == [0, 5]
    assert steps.step_rows([0, 3, 6], slots=8, layout=StepLayout(None, 2)) == [0, 3, 6]
    assert steps.step_rows([0, 3, 6], slots=8, layout=StepLayout(2, 1)) == [0, 3, 6]  # products top themselves up
    assert steps.step_rows([2], slots=8, layout=StepLayout(1, 1)) == [2]


def test_neighbouring_rows_of_one_length_share_an_attention_call_and_idle_rows_are_skipped() -> None:
    attended = [(0, 0, 5), (1, 1, 5), (2, 2, 6), (4, 5, 6), (5, 6, 6)]
    assert lean._attention_runs(attended, rows=7) == [(0, 0, 2, 5), (2, 2, 1, 6), (3, -1, 1, 0), (4, 5, 2, 6), (6, -1, 1, 0)]


def test_without_padding_a_step_computes_only_its_live_sequences() -> None:
    tokenizer = char_tokenizer()
    model = tiny_model(tokenizer)
    contexts = {1: [3, 4, 5], 6: [7, 8]}
    padded, compact = BatchedKVCache(model, slots=8), BatchedKVCache(model, slots=8)
    for cache in (padded, compact):
        for slot, context in contexts.items():
            prefill_slot(model, cache, slot, context)
    everything = decode_step(DecodingModel(model), padded, {1: 9, 6: 10})
    live_only = decode_step(DecodingModel(model), compact, {1: 9, 6: 10}, rows=[1, 6])
    assert sorted(everything) == sorted(live_only) == [1, 6]
    for slot in contexts:
        torch.testing.assert_close(live_only[slot], everything[slot], rtol=1e-5, atol=1e-5)
    assert padded.lengths == compact.lengths == [0, 4, 0, 0, 0, 0, 3, 0]


def test_requests_beyond_the_free_slots_wait_and_join_between_steps(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_server(max_batch=3)
    sizes = record_batch_sizes(monkeypatch)
    alone, together = asyncio.run(alone_then_together(server, PROMPTS, MAX_TOKENS))
    assert together == alone
    assert max(sizes) == 3


def slow_steps(monkeypatch: pytest.MonkeyPatch, seconds: float) -> list[int]:
    """Each decoding step takes at least `seconds`: a long reply stays in its slot long enough to watch.
    Returns the steps' batch sizes, appended as they run."""
    original = batching.decode_step
    batch_sizes: list[int] = []

    def slow(model, cache, tokens, **layout):
        batch_sizes.append(len(tokens))
        time.sleep(seconds)
        return original(model, cache, tokens, **layout)

    monkeypatch.setattr(batching, "decode_step", slow)
    return batch_sizes


def wait_until_idle(server: LiveServer, within_seconds: float = HANG_GUARD_SECONDS) -> bool:
    """True once no sequence decodes; `within_seconds` only guards against a hang."""
    deadline = time.monotonic() + within_seconds
    while time.monotonic() < deadline:
        if httpx.get(server.url + "health").json()["active"] == 0:
            return True
        time.sleep(0.02)
    return False


def test_a_client_that_disconnects_mid_stream_frees_its_slot(start_server: StartServer, monkeypatch: pytest.MonkeyPatch) -> None:
    batch_sizes = slow_steps(monkeypatch, 0.01)  # 8192 tokens would hold the only slot for 80 s
    server = start_server(max_batch=1)
    body = {"prompt": "the raven", "max_tokens": 8192, "stream": True}
    with httpx.stream("POST", server.api + "/completions", json=body, timeout=30) as response:
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))
    assert wait_until_idle(server)
    steps_before = len(batch_sizes)
    reply = httpx.post(server.api + "/completions", json={"prompt": "quoth", "max_tokens": 20}, timeout=30)
    assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] == 20
    assert len(batch_sizes) - steps_before <= 20  # its own steps, not the abandoned reply's 8192


def test_a_client_that_gives_up_on_a_plain_request_frees_its_slot(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_steps(monkeypatch, 0.01)
    server = start_server(max_batch=1)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.api + "/completions", json={"prompt": "the raven", "max_tokens": 8192}, timeout=0.5)
    assert wait_until_idle(server)


@pytest.mark.parametrize("attention_bucket", [None, 8])
def test_a_batched_step_gives_each_sequence_the_models_own_logits(attention_bucket) -> None:
    tokenizer = char_tokenizer()
    model = tiny_model(tokenizer)
    contexts = {0: [3, 4, 5], 2: [7, 8, 9, 10, 11], 3: [12]}
    cache = BatchedKVCache(model, slots=4)
    for slot, context in contexts.items():
        prefill_slot(model, cache, slot, context)
    logits = decode_step(DecodingModel(model), cache, {slot: 6 for slot in contexts}, attention_bucket=attention_bucket)
    with torch.inference_mode():
        for slot, context in contexts.items():
            expected = model(torch.tensor([context + [6]]))[0][0, -1]
            torch.testing.assert_close(logits[slot], expected, rtol=1e-5, atol=1e-5)
    assert cache.lengths == [4, 0, 6, 2]


@pytest.mark.parametrize("attention_bucket", [None, 8])
@pytest.mark.parametrize("chunk", [None, 1, 2])
def test_a_sequences_logits_are_bit_identical_alone_and_beside_others(chunk, attention_bucket) -> None:
    """With a bucket, the four sequences (lengths 2 to 6) attend in one masked call; without, each alone."""
    tokenizer = char_tokenizer()
    model = tiny_model(tokenizer)
    mine, others = [3, 4, 5, 6], {0: [7, 8], 1: [9, 10, 11, 12, 13, 14], 3: [15]}

    def my_logits_after_two_steps(neighbours: dict[int, list[int]]) -> torch.Tensor:
        cache = BatchedKVCache(model, slots=4, spare_slot=True)
        for slot, context in {2: mine, **neighbours}.items():
            prefill_slot(model, cache, slot, context)
        # Without a chunk, every slot is a row (idle ones as padding); with one, only the live slots.
        rows = None if chunk is None else sorted([2, *neighbours])
        for token in (1, 2):
            logits = decode_step(
                DecodingModel(model), cache, {slot: token for slot in [2, *neighbours]}, rows=rows, chunk=chunk,
                attention_bucket=attention_bucket,
            )
        return logits[2]

    assert torch.equal(my_logits_after_two_steps({}), my_logits_after_two_steps(others))


def test_a_slot_reused_by_a_shorter_sequence_keeps_nothing_of_the_last_one_past_its_length() -> None:
    tokenizer = char_tokenizer()
    model = tiny_model(tokenizer)
    cache = BatchedKVCache(model, slots=1)
    prefill_slot(model, cache, 0, list(range(1, 12)))
    # As a sequence whose numbers overflowed might leave them, up to the position a failed step wrote (11).
    cache.keys[:, 0, :, 5:12] = float("nan")
    cache.values[:, 0, :, 5:12] = float("nan")
    prefill_slot(model, cache, 0, [3, 4, 5])
    assert not cache.keys[:, 0, :, 3:].any() and not cache.values[:, 0, :, 3:].any()
    logits = decode_step(DecodingModel(model), cache, {0: 6}, attention_bucket=8)[0]  # attends over 8 positions
    with torch.inference_mode():
        torch.testing.assert_close(logits, model(torch.tensor([[3, 4, 5, 6]]))[0][0, -1], rtol=1e-5, atol=1e-5)


def test_padding_ids_past_the_tokenizers_vocabulary_are_never_drawn(start_server: StartServer) -> None:
    tokenizer = char_tokenizer()
    model = tiny_model(tokenizer)
    padded = type(model)(type(model.config)(**{**model.config.to_dict(), "vocab_size": 64})).eval()
    with torch.no_grad():
        padded.load_state_dict({
            name: torch.cat([value, torch.full((64 - value.size(0), value.size(1)), 50.0)])
            if name in {"transformer.wte.weight", "lm_head.weight"} else value
            for name, value in model.state_dict().items()
        })
    server = start_server(padded, tokenizer)
    for seed in range(3):
        reply = httpx.post(
            server.api + "/completions", json={"prompt": "the", "max_tokens": 30, "temperature": 1.5, "seed": seed}, timeout=30
        )
        assert reply.status_code == 200
        assert len(reply.json()["choices"][0]["text"]) == 30  # every id decoded to one of the tokenizer's characters


@pytest.mark.parametrize("interval", [0.0, 60.0])
def test_text_reaches_a_request_at_once_then_at_most_every_delivery_interval(
    interval: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batching, "DELIVERY_INTERVAL_SECONDS", interval)
    slow_steps(monkeypatch, 0.005)  # the reader keeps up with every delivery
    tokenizer = char_tokenizer()
    scheduler = batching.Scheduler(tiny_model(tokenizer), tokenizer, max_batch=2)
    scheduler.start()

    async def events() -> list[serve_events.Event]:
        handle = scheduler.submit(tokenizer.encode("the raven"), serve_events.SamplingSettings(max_tokens=30, temperature=0))
        return [event async for event in handle.events()]

    try:
        received = asyncio.run(events())
    finally:
        scheduler.stop(timeout=10)
    pieces = [event.text for event in received if isinstance(event, serve_events.TextPiece)]
    assert isinstance(received[-1], serve_events.Finished) and received[-1].completion_tokens == 30
    assert len("".join(pieces)) == 30
    if interval:  # the first token at once, the other 29 with the end
        assert [len(piece) for piece in pieces] == [1, 29]
    else:  # a piece per step
        assert len(pieces) >= 25


def test_a_failure_while_the_generation_thread_sets_up_is_raised_by_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(model, max_batch, measure=None):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(batching, "measure_step_layout", broken)
    tokenizer = char_tokenizer()
    scheduler = batching.Scheduler(tiny_model(tokenizer), tokenizer, max_batch=2)
    with pytest.raises(RuntimeError, match="out of memory"):
        scheduler.start()
    with pytest.raises(UserError, match="shutting down"):
        scheduler.submit([1, 2], serve_events.SamplingSettings(max_tokens=3, temperature=0))
