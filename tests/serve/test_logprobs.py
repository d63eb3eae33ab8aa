"""Scoring over the API: `echo`, `logprobs`, several prompts and `n` samples, through the official `openai` client.

The reference for every log-probability is `hellogpt eval`'s own computation (hellogpt/evaluate.py) on the same
tokens; one server (a char model whose vocabulary is the dataset's) serves the whole module.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import pytest
import torch

from hellogpt.data.loader import TokenDataset, open_dataset
from hellogpt.decode.logprobs import score_prompt
from hellogpt.evaluate import evaluate_model, window_starts
from hellogpt.generate import prepare_int8_for_inference
from tests.serve.conftest import MODEL_ID, LiveServer, _servers, tiny_model
from tests.train.conftest import write_char_dataset

BLOCK_SIZE = 32
TEXT = "once upon a midnight dreary, while i pondered, weak and weary,\nover many a quaint and curious volume:\n" * 4
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> TokenDataset:
    return open_dataset(write_char_dataset(tmp_path_factory.mktemp("scoring") / "chars", TEXT, val_fraction=0.5))


@pytest.fixture(scope="module")
def scoring_server(dataset: TokenDataset) -> Iterator[LiveServer]:
    servers = _servers()
    yield next(servers)(tiny_model(dataset.tokenizer, BLOCK_SIZE), dataset.tokenizer)
    next(servers, None)


def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.api, api_key="unused", max_retries=0, timeout=60)


def eval_window(dataset: TokenDataset, length: int) -> tuple[list[int], float]:
    """The first val window of `length` + 1 tokens and its total log-probability as `hellogpt eval` computes it."""
    model = tiny_model(dataset.tokenizer, BLOCK_SIZE)
    starts = window_starts(dataset, "val", length, 1)
    scored = evaluate_model(model, "", dataset.tokenizer, dataset, "val", starts, length, torch.device("cpu"), torch.float32)
    ids = np.asarray(dataset.tokens("val")[: length + 1]).tolist()
    return ids, -scored.loss * scored.tokens


def test_an_echoed_prompt_scores_as_hellogpt_eval_does(scoring_server: LiveServer, dataset: TokenDataset) -> None:
    ids, total = eval_window(dataset, BLOCK_SIZE - 1)
    completion = client(scoring_server).completions.create(
        model=MODEL_ID, prompt=ids, max_tokens=0, echo=True, logprobs=0
    )
    choice = completion.choices[0]
    assert choice.text == dataset.tokenizer.decode(ids)
    assert choice.finish_reason == "length" and completion.usage.completion_tokens == 0
    assert choice.logprobs.token_logprobs[0] is None and choice.logprobs.top_logprobs[0] is None
    assert math.isclose(sum(choice.logprobs.token_logprobs[1:]), total, abs_tol=TOLERANCE)
    assert choice.logprobs.tokens == [dataset.tokenizer.decode([token]) for token in ids]
    assert choice.logprobs.text_offset == list(range(len(ids)))


def test_a_continuation_scores_the_same_alone_and_batched_with_other_requests(
    scoring_server: LiveServer, dataset: TokenDataset
) -> None:
    """What harnesses do: context + continuation in one prompt, the continuation's log-probabilities summed."""
    ids, _ = eval_window(dataset, BLOCK_SIZE - 1)
    context_length = 20
    with torch.no_grad():
        reference = tiny_model(dataset.tokenizer, BLOCK_SIZE)(torch.tensor([ids]))[0]
    positions = torch.arange(context_length - 1, len(ids) - 1)
    expected = float(torch.log_softmax(reference[0].float(), -1)[positions, torch.tensor(ids[context_length:])].sum())

    def continuation(choice: openai.types.CompletionChoice) -> float:
        return sum(choice.logprobs.token_logprobs[context_length : len(ids)])

    alone = client(scoring_server).completions.create(model=MODEL_ID, prompt=ids, max_tokens=0, echo=True, logprobs=1)

    async def under_load() -> list[openai.types.Completion]:
        other = openai.AsyncOpenAI(base_url=scoring_server.api, api_key="unused", max_retries=0, timeout=60)
        busy = [
            other.completions.create(model=MODEL_ID, prompt="quoth the raven", max_tokens=40, temperature=1.0, n=3)
            for _ in range(2)
        ]
        scored = other.completions.create(
            model=MODEL_ID, prompt=[ids[:5], ids, ids[3:]], max_tokens=2, echo=True, logprobs=1, temperature=0
        )
        return (await asyncio.gather(scored, *busy))

    batched = asyncio.run(under_load())[0]
    assert math.isclose(continuation(alone.choices[0]), expected, abs_tol=TOLERANCE)
    assert math.isclose(continuation(batched.choices[1]), expected, abs_tol=TOLERANCE)
    assert [choice.index for choice in batched.choices] == [0, 1, 2]
    assert batched.choices[0].text.startswith(dataset.tokenizer.decode(ids[:5]))
    assert len(batched.choices[1].logprobs.tokens) == len(ids) + 2  # the echoed prompt and two new tokens


def test_generated_tokens_come_with_the_models_log_probabilities(scoring_server: LiveServer) -> None:
    """Before temperature: a sampled token's log-probability is the model's, the top ones sorted, greedy's the max."""
    completion = client(scoring_server).completions.create(
        model=MODEL_ID, prompt="once upon", max_tokens=8, temperature=0, logprobs=3
    )
    choice = completion.choices[0]
    logprobs = choice.logprobs
    assert "".join(logprobs.tokens) == choice.text
    assert logprobs.text_offset == [len("once upon") + position for position in range(8)]
    for token, logprob, top in zip(logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs):
        assert len(top) == 3 and list(top.values()) == sorted(top.values(), reverse=True)
        assert top[token] == logprob == max(top.values())
    hot = client(scoring_server).completions.create(
        model=MODEL_ID, prompt="once upon", max_tokens=1, temperature=1.5, top_p=0.5, logprobs=3, seed=1
    )
    assert hot.choices[0].logprobs.top_logprobs == logprobs.top_logprobs[:1]  # the same, whatever the sampling


def test_three_greedy_samples_are_identical_and_seeded_samples_reproducible(scoring_server: LiveServer) -> None:
    greedy = client(scoring_server).completions.create(
        model=MODEL_ID, prompt="once upon", max_tokens=12, temperature=0, n=3
    )
    assert [choice.index for choice in greedy.choices] == [0, 1, 2]
    assert len({choice.text for choice in greedy.choices}) == 1
    assert greedy.usage.completion_tokens == 36 and greedy.usage.prompt_tokens == len("once upon")

    def sampled() -> list[str]:
        reply = client(scoring_server).completions.create(
            model=MODEL_ID, prompt=["once upon", "while i"], max_tokens=12, temperature=1.0, n=3, seed=7
        )
        return [choice.text for choice in reply.choices]

    first = sampled()
    assert sampled() == first
    assert len(set(first[:3])) > 1  # the samples of one prompt differ
    alone = client(scoring_server).completions.create(
        model=MODEL_ID, prompt="while i", max_tokens=12, temperature=1.0, n=3, seed=7
    )
    assert [choice.text for choice in alone.choices] == first[3:]  # a prompt's samples do not depend on its list


def test_echo_returns_the_prompt_first_plain_and_streamed(scoring_server: LiveServer) -> None:
    plain = client(scoring_server).completions.create(
        model=MODEL_ID, prompt="once upon", max_tokens=6, temperature=0, echo=True
    )
    streamed = client(scoring_server).completions.create(
        model=MODEL_ID, prompt="once upon", max_tokens=6, temperature=0, echo=True, stream=True
    )
    assert plain.choices[0].text.startswith("once upon") and len(plain.choices[0].text) == len("once upon") + 6
    assert "".join(chunk.choices[0].text for chunk in streamed) == plain.choices[0].text


def test_a_streamed_scored_completion_joins_to_the_plain_one(scoring_server: LiveServer) -> None:
    request = dict(model=MODEL_ID, prompt="once upon", max_tokens=6, temperature=0, echo=True, logprobs=2, n=2)
    plain = client(scoring_server).completions.create(**request)
    chunks = list(client(scoring_server).completions.create(**request, stream=True))
    for index in range(2):
        mine = [chunk.choices[0] for chunk in chunks if chunk.choices[0].index == index]
        assert "".join(choice.text for choice in mine) == plain.choices[index].text
        joined = [value for choice in mine if choice.logprobs for value in choice.logprobs.token_logprobs]
        offsets = [value for choice in mine if choice.logprobs for value in choice.logprobs.text_offset]
        assert joined == plain.choices[index].logprobs.token_logprobs
        assert offsets == plain.choices[index].logprobs.text_offset == list(range(len("once upon") + 6))


def test_chat_log_probabilities_plain_and_streamed(scoring_server: LiveServer) -> None:
    request = dict(
        model=MODEL_ID, messages=[{"role": "user", "content": "once upon"}], max_tokens=6, temperature=0,
        logprobs=True, top_logprobs=4, n=2,
    )
    plain = client(scoring_server).chat.completions.create(**request)
    assert plain.choices[0].message.content == plain.choices[1].message.content
    content = plain.choices[0].logprobs.content
    assert "".join(entry.token for entry in content) == plain.choices[0].message.content
    for entry in content:
        assert bytes(entry.bytes).decode() == entry.token
        assert len(entry.top_logprobs) == 4 and entry.top_logprobs[0].logprob == entry.logprob
    chunks = list(client(scoring_server).chat.completions.create(**request, stream=True))
    streamed = [
        entry for chunk in chunks for choice in chunk.choices if choice.index == 1 and choice.logprobs
        for entry in choice.logprobs.content
    ]
    assert [entry.token for entry in streamed] == [entry.token for entry in content]
    assert [entry.logprob for entry in streamed] == pytest.approx([entry.logprob for entry in content], abs=TOLERANCE)


def test_penalties_change_a_greedy_reply(scoring_server: LiveServer) -> None:
    server = scoring_server
    plain = client(server).completions.create(model=MODEL_ID, prompt="the raven", max_tokens=30, temperature=0)
    penalised = client(server).completions.create(
        model=MODEL_ID, prompt="the raven", max_tokens=30, temperature=0, frequency_penalty=2.0, presence_penalty=2.0
    )
    text, repeated = plain.choices[0].text, penalised.choices[0].text
    assert repeated != text
    assert len(set(repeated)) > len(set(text))  # a penalised reply repeats itself less


@pytest.fixture(scope="module")
def int8_server(dataset: TokenDataset) -> Iterator[LiveServer]:
    """The scoring server's model decoding with int8 weights, beside its fp32 copy for scoring (as `serve
    --quantize int8` runs it)."""
    decoding = prepare_int8_for_inference(tiny_model(dataset.tokenizer, BLOCK_SIZE), torch.device("cpu"))
    servers = _servers()
    yield next(servers)(decoding, dataset.tokenizer, scoring_model=tiny_model(dataset.tokenizer, BLOCK_SIZE))
    next(servers, None)


def test_an_int8_server_scores_in_fp32_as_hellogpt_eval_does(int8_server: LiveServer, dataset: TokenDataset) -> None:
    """The echoed prompt and the generated tokens, scored by the fp32 copy: `eval`'s numbers, which the int8
    forward alone misses by more than the tolerance."""
    ids, total = eval_window(dataset, 20)
    prompt = ids[:-1]
    int8_alone = score_prompt(int8_server.scheduler.model, ids, 0, dataset.tokenizer.vocab_size)
    assert not math.isclose(sum(score.logprob for score in int8_alone[1:]), total, abs_tol=TOLERANCE)
    scored = client(int8_server).completions.create(model=MODEL_ID, prompt=ids, max_tokens=0, echo=True, logprobs=0)
    assert math.isclose(sum(scored.choices[0].logprobs.token_logprobs[1:]), total, abs_tol=TOLERANCE)

    request = dict(model=MODEL_ID, prompt=prompt, max_tokens=BLOCK_SIZE - len(prompt), temperature=0, echo=True, logprobs=2)
    generated = client(int8_server).completions.create(**request)
    streamed = list(client(int8_server).completions.create(**request, stream=True))
    logprobs = generated.choices[0].logprobs
    tokens = [token for text in logprobs.tokens for token in dataset.tokenizer.encode(text)]
    assert tokens[: len(prompt)] == prompt and len(tokens) > len(prompt)
    with torch.no_grad():
        reference = torch.log_softmax(tiny_model(dataset.tokenizer, BLOCK_SIZE)(torch.tensor([tokens]))[0][0], -1)
    expected = [float(reference[position - 1, token]) for position, token in enumerate(tokens) if position > 0]
    assert logprobs.token_logprobs[1:] == pytest.approx(expected, abs=TOLERANCE)
    joined = [value for chunk in streamed if chunk.choices[0].logprobs for value in chunk.choices[0].logprobs.token_logprobs]
    assert joined[1:] == pytest.approx(expected, abs=TOLERANCE)  # streamed chunks carry the fp32 numbers as they go
