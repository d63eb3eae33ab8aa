"""The official `openai` Python client against a live server: the surface real programs use."""

from __future__ import annotations

import openai
import pytest

from hellogpt.data.tokenizer import gpt2_tokenizer
from hellogpt.decode import sequence
from hellogpt.decode.stream import stream_tokens
from hellogpt.model.gpt import GPT, GPTConfig
from hellogpt.data.conversation import render_transcript
from tests.serve.conftest import MODEL_ID, LiveServer, StartServer, char_tokenizer, tiny_model


def client(server: LiveServer, api_key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.api, api_key=api_key, max_retries=0, timeout=30)


def greedy_text(prompt: str, max_tokens: int) -> str:
    """What `chat` writes for `prompt` with temperature 0 (the reference for a one-slot server)."""
    tokenizer = char_tokenizer()
    ids = stream_tokens(
        tiny_model(tokenizer), tokenizer.encode(prompt), max_new_tokens=max_tokens, temperature=0.0,
        vocab_size=tokenizer.vocab_size,
    )
    return tokenizer.decode(list(ids))


def test_the_models_list_names_the_served_model(server: LiveServer) -> None:
    models = client(server).models.list().data
    assert [model.id for model in models] == [MODEL_ID]
    assert client(server).models.retrieve(MODEL_ID).id == MODEL_ID


def test_a_completion_continues_the_prompt_and_counts_its_tokens(server: LiveServer) -> None:
    completion = client(server).completions.create(model=MODEL_ID, prompt="the raven", max_tokens=12, temperature=0)
    choice = completion.choices[0]
    assert completion.object == "text_completion"
    assert choice.finish_reason == "length"
    assert len(choice.text) == 12  # one character per token
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == (9, 12, 21)


def test_a_one_slot_server_writes_what_chat_writes(start_server: StartServer) -> None:
    server = start_server(max_batch=1)
    completion = client(server).completions.create(model=MODEL_ID, prompt="the raven", max_tokens=60, temperature=0)
    assert completion.choices[0].text == greedy_text("the raven", 60)  # 60 tokens: the 32-token window slides too


def test_a_streamed_completion_joins_to_the_plain_one(server: LiveServer) -> None:
    plain = client(server).completions.create(model=MODEL_ID, prompt="quoth", max_tokens=15, temperature=0)
    chunks = list(client(server).completions.create(model=MODEL_ID, prompt="quoth", max_tokens=15, temperature=0, stream=True))
    assert "".join(chunk.choices[0].text for chunk in chunks) == plain.choices[0].text
    assert [chunk.choices[0].finish_reason for chunk in chunks][-1] == "length"
    assert all(chunk.choices[0].finish_reason is None for chunk in chunks[:-1])


def test_a_chat_completion_answers_the_transcript_of_the_messages(server: LiveServer) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    reply = client(server).chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=10, temperature=0)
    as_text = client(server).completions.create(
        model=MODEL_ID, prompt=render_transcript([("system", "be brief"), ("user", "hello")]), max_tokens=10,
        temperature=0, stop=["\nuser:"],
    )
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == as_text.choices[0].text
    assert reply.usage.prompt_tokens == len("system: be brief\nuser: hello\nassistant:")


def test_a_streamed_chat_sends_the_role_first_and_the_finish_reason_last(server: LiveServer) -> None:
    stream = client(server).chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "hi"}], max_tokens=8, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text_chunks, closing, usage = chunks[1:-2], chunks[-2], chunks[-1]
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert closing.choices[0].finish_reason in {"stop", "length"}
    assert usage.choices == [] and usage.usage.completion_tokens <= 8
    assert len({chunk.id for chunk in chunks}) == 1
    assert "".join(chunk.choices[0].delta.content or "" for chunk in text_chunks)


def test_a_stop_string_ends_the_text_before_it(server: LiveServer) -> None:
    full = client(server).completions.create(model=MODEL_ID, prompt="the raven", max_tokens=20, temperature=0).choices[0].text
    stop = full[5:7]
    cut = client(server).completions.create(model=MODEL_ID, prompt="the raven", max_tokens=20, temperature=0, stop=[stop])
    assert cut.choices[0].text == full[: full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed = client(server).completions.create(
        model=MODEL_ID, prompt="the raven", max_tokens=20, temperature=0, stop=stop, stream=True
    )
    assert "".join(chunk.choices[0].text for chunk in streamed) == full[: full.index(stop)]


def test_a_seed_reproduces_a_sample_and_another_seed_differs(server: LiveServer) -> None:
    def sample(seed: int) -> str:
        return client(server).completions.create(
            model=MODEL_ID, prompt="the", max_tokens=30, temperature=1.0, seed=seed
        ).choices[0].text

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)


def test_request_fields_override_the_servers_sample_settings(start_server: StartServer) -> None:
    from hellogpt.config.schema import SampleConfig

    server = start_server(defaults=SampleConfig(max_new_tokens=5, temperature=0.0))
    default = client(server).completions.create(model=MODEL_ID, prompt="the")
    longer = client(server).completions.create(model=MODEL_ID, prompt="the", max_tokens=9)
    assert default.usage.completion_tokens == 5
    assert longer.usage.completion_tokens == 9
    assert longer.choices[0].text.startswith(default.choices[0].text)  # greedy by the server's default


def test_a_character_split_over_several_tokens_arrives_whole(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokenizer = gpt2_tokenizer()
    wanted = "a 🙂 é 漢字"
    script = iter(tokenizer.encode(wanted) + [tokenizer.eot_id])
    monkeypatch.setattr(sequence, "sample_next_token", lambda logits, **settings: next(script))
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=50304, dropout=0.0, bias=True, arch="gpt2")).eval()
    server = start_server(model, tokenizer)
    chunks = [chunk.choices[0].text for chunk in client(server).completions.create(model=MODEL_ID, prompt="x", stream=True)]
    assert "".join(chunks) == wanted
    assert all("\ufffd" not in chunk for chunk in chunks)
    assert len(tokenizer.encode("🙂")) > 1  # the emoji really is split over tokens
