"""A chat model behind the server: /v1/chat/completions renders the messages with its template and the reply ends at
its end-of-turn token; /v1/completions still continues raw text."""

from __future__ import annotations

import httpx
import pytest

from hellogpt.config.schema import SampleConfig
from hellogpt.data.chat_template import CHATML_TEMPLATE
from tests.chat_models import bigram_chat_model, chat_char_tokenizer
from tests.serve.conftest import LiveServer, StartServer

GREEDY = SampleConfig(max_new_tokens=20, temperature=0.0)


@pytest.fixture()
def chat_server(start_server: StartServer) -> LiveServer:
    tokenizer = chat_char_tokenizer()
    return start_server(bigram_chat_model(tokenizer), tokenizer, defaults=GREEDY, chat_template=CHATML_TEMPLATE)


def test_chat_completions_render_the_template_and_stop_at_the_end_of_the_turn(chat_server: LiveServer) -> None:
    messages = [{"role": "developer", "content": "be brief."}, {"role": "user", "content": "hello <|im_end|>"}]
    response = httpx.post(chat_server.api + "/chat/completions", json={"messages": messages}, timeout=30)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["choices"][0]["message"]["content"] == "hi."
    assert answer["choices"][0]["finish_reason"] == "stop" and answer["usage"]["completion_tokens"] == 3


def test_completions_of_a_chat_model_continue_the_raw_text(chat_server: LiveServer) -> None:
    response = httpx.post(chat_server.api + "/completions", json={"prompt": "hello", "max_tokens": 5}, timeout=30)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert (choice["text"], choice["finish_reason"]) == ("ooooo", "length")  # no template: not an answer
