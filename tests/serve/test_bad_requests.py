"""Bad requests get OpenAI-shaped 4xx errors naming the problem, and the server goes on serving."""

from __future__ import annotations

from typing import Any, Optional

import httpx
import openai
import pytest

from tests.serve.conftest import MODEL_ID, LiveServer, StartServer

COMPLETIONS, CHAT = "/completions", "/chat/completions"
HELLO = [{"role": "user", "content": "hello"}]

BAD_REQUESTS = [
    # (endpoint, raw body or JSON object, status, the field named in `param` or None, words in the message)
    (COMPLETIONS, b'{"prompt": "the raven", ', 400, None, "not valid JSON"),
    (COMPLETIONS, b"\xff\xfe not even text", 400, None, "not valid JSON"),
    (COMPLETIONS, b"", 400, None, "not valid JSON"),
    (COMPLETIONS, [1, 2], 400, None, "JSON object"),
    (COMPLETIONS, {}, 400, "prompt", "Field required"),
    (COMPLETIONS, {"prompt": 42}, 400, "prompt", "valid string"),
    (COMPLETIONS, {"prompt": [["a"]]}, 400, "prompt.0.0", "valid integer"),
    (COMPLETIONS, {"prompt": []}, 400, "prompt", "at least one prompt"),
    (COMPLETIONS, {"prompt": [[1, 2], []]}, 400, "prompt", "at least one id"),
    (COMPLETIONS, {"prompt": [1, 34]}, 400, "prompt", "token id 34 is not in the vocabulary (0 to 33)"),
    (COMPLETIONS, {"prompt": [[1], [2, -1]]}, 400, "prompt.1", "token id -1 is not in the vocabulary"),
    (COMPLETIONS, {"prompt": ["a", "ABC"]}, 400, "prompt.1", "not in this char-level vocabulary"),
    (COMPLETIONS, {"prompt": "a", "echo": "yes"}, 400, "echo", "valid boolean"),
    (COMPLETIONS, {"prompt": "a", "logprobs": 6}, 400, "logprobs", "less than or equal to 5"),
    (COMPLETIONS, {"prompt": "a", "logprobs": -1}, 400, "logprobs", "greater than or equal to 0"),
    (COMPLETIONS, {"prompt": "a", "logprobs": True}, 400, "logprobs", "valid integer"),
    (COMPLETIONS, {"prompt": "a", "n": 0}, 400, "n", "greater than or equal to 1"),
    (COMPLETIONS, {"prompt": "a", "n": 9}, 400, "n", "less than or equal to 8"),
    (COMPLETIONS, {"prompt": "a", "best_of": 3}, 400, "best_of", "not implemented"),
    (COMPLETIONS, {"prompt": "a", "frequency_penalty": 2.5}, 400, "frequency_penalty", "less than or equal to 2"),
    (COMPLETIONS, {"prompt": "a", "presence_penalty": -3}, 400, "presence_penalty", "greater than or equal to -2"),
    (COMPLETIONS, {"prompt": "a", "presence_penalty": "lots"}, 400, "presence_penalty", "valid number"),
    (COMPLETIONS, {"prompt": "a", "max_tokens": "5"}, 400, "max_tokens", "valid integer"),
    (COMPLETIONS, {"prompt": "a", "max_tokens": 2.5}, 400, "max_tokens", "valid integer"),
    (COMPLETIONS, {"prompt": "a", "max_tokens": -1}, 400, "max_tokens", "greater than or equal to 0"),
    (COMPLETIONS, {"prompt": "a", "max_tokens": 0}, 400, "max_tokens", "needs `echo: true`"),
    (COMPLETIONS, {"prompt": "a", "max_tokens": 10**12}, 400, "max_tokens", "less than or equal to 8192"),
    (COMPLETIONS, {"prompt": "a", "temperature": -0.5}, 400, "temperature", "greater than or equal to 0"),
    (COMPLETIONS, b'{"prompt": "a", "temperature": 1e999}', 400, "temperature", "less than or equal to 2"),
    (COMPLETIONS, {"prompt": "a", "temperature": "hot"}, 400, "temperature", "valid number"),
    (COMPLETIONS, {"prompt": "a", "top_p": 0}, 400, "top_p", "greater than 0"),
    (COMPLETIONS, {"prompt": "a", "top_k": 0}, 400, "top_k", "greater than or equal to 1"),
    (COMPLETIONS, {"prompt": "a", "seed": -3}, 400, "seed", "not a seed"),
    (COMPLETIONS, {"prompt": "a", "seed": 2**70}, 400, "seed", "not a seed"),
    (COMPLETIONS, {"prompt": "a", "stop": ["", "x"]}, 400, "stop", "must not be empty"),
    (COMPLETIONS, {"prompt": "a", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop", "at most 4"),
    (COMPLETIONS, {"prompt": "a", "stream": "yes"}, 400, "stream", "valid boolean"),
    (COMPLETIONS, {"prompt": "a", "model": "gpt-4o"}, 404, "model", "does not exist"),
    (COMPLETIONS, {"prompt": "ABC"}, 400, "prompt", "not in this char-level vocabulary"),
    (COMPLETIONS, {"prompt": ""}, 400, "prompt", "empty"),
    (CHAT, {"messages": []}, 400, "messages", "at least 1 item"),
    (CHAT, {}, 400, "messages", "Field required"),
    (CHAT, {"messages": "hello"}, 400, "messages", "valid array"),
    (CHAT, {"messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages.0.role", "'user'"),
    (CHAT, {"messages": [{"role": "user", "content": 5}]}, 400, "messages.0.content", "valid string"),
    (CHAT, {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, 400,
     "messages.0.content.0.type", "'text'"),
    (CHAT, {"messages": HELLO, "max_completion_tokens": -2}, 400, "max_completion_tokens", "greater than or equal to 1"),
    (CHAT, {"messages": [{"role": "user", "content": "HELLO"}]}, 400, "messages", "not in this char-level vocabulary"),
    (CHAT, {"messages": HELLO, "model": "nope"}, 404, "model", "does not exist"),
    (CHAT, {"messages": HELLO, "max_tokens": 0}, 400, "max_tokens", "greater than or equal to 1"),
    (CHAT, {"messages": HELLO, "logprobs": 1}, 400, "logprobs", "valid boolean"),
    (CHAT, {"messages": HELLO, "logprobs": True, "top_logprobs": 21}, 400, "top_logprobs", "less than or equal to 20"),
    (CHAT, {"messages": HELLO, "top_logprobs": 2}, 400, "top_logprobs", "needs `logprobs: true`"),
    (CHAT, {"messages": HELLO, "n": 9}, 400, "n", "less than or equal to 8"),
    (CHAT, {"messages": HELLO, "frequency_penalty": -2.01}, 400, "frequency_penalty", "greater than or equal to -2"),
]


def post(server: LiveServer, endpoint: str, body: Any, headers: Optional[dict[str, str]] = None) -> httpx.Response:
    content = body if isinstance(body, bytes) else httpx.Request("POST", "/", json=body).content
    headers = {"Content-Type": "application/json", **(headers or {})}
    return httpx.post(server.api + endpoint, content=content, headers=headers, timeout=30)


def assert_still_serving(server: LiveServer) -> None:
    assert httpx.get(server.url + "health").json()["status"] == "ok"
    reply = post(server, COMPLETIONS, {"prompt": "the", "max_tokens": 3})
    assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] == 3


@pytest.mark.parametrize(("endpoint", "body", "status", "param", "words"), BAD_REQUESTS)
def test_a_bad_request_is_an_openai_error_and_the_server_goes_on(
    shared_server: LiveServer, endpoint: str, body: Any, status: int, param: Optional[str], words: str
) -> None:
    server = shared_server
    reply = post(server, endpoint, body)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert words in error["message"]
    assert_still_serving(server)


def test_a_streamed_bad_request_is_refused_before_any_event(server: LiveServer) -> None:
    reply = post(server, CHAT, {"messages": [], "stream": True})
    assert reply.status_code == 400
    assert reply.headers["content-type"] == "application/json"


def test_unknown_routes_and_methods_are_openai_errors_too(server: LiveServer) -> None:
    assert httpx.get(server.api + "/engines").json()["error"]["code"] == "not_found"
    assert httpx.get(server.api + COMPLETIONS).status_code == 405
    assert "error" in httpx.get(server.api + COMPLETIONS).json()


def test_a_prompt_longer_than_the_context_keeps_its_end_and_says_how_much_was_dropped(server: LiveServer) -> None:
    long_prompt = "the raven " * 10  # 100 characters into a 32-token context
    reply = post(server, COMPLETIONS, {"prompt": long_prompt, "max_tokens": 5, "temperature": 0})
    tail = post(server, COMPLETIONS, {"prompt": long_prompt[-32:], "max_tokens": 5, "temperature": 0})
    assert reply.status_code == 200
    assert reply.headers["X-Prompt-Tokens-Dropped"] == "68"
    assert reply.json()["usage"]["prompt_tokens"] == 100
    assert reply.json()["choices"][0]["text"] == tail.json()["choices"][0]["text"]
    assert "X-Prompt-Tokens-Dropped" not in tail.headers


def test_with_an_api_key_a_missing_or_wrong_key_is_401(start_server: StartServer) -> None:
    server = start_server(api_key="s3cret")
    body = {"prompt": "the", "max_tokens": 2}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        reply = post(server, COMPLETIONS, body, headers)
        assert reply.status_code == 401
        assert reply.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(server.api + "/models").status_code == 401
    assert post(server, COMPLETIONS, body, {"Authorization": "Bearer s3cret"}).status_code == 200
    assert httpx.get(server.url + "health").status_code == 200  # health and the page need no key
    assert httpx.get(server.url).status_code == 200


def test_the_openai_client_sees_a_wrong_key_as_an_authentication_error(start_server: StartServer) -> None:
    server = start_server(api_key="s3cret")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.api, api_key="wrong", max_retries=0).models.list()
    good = openai.OpenAI(base_url=server.api, api_key="s3cret", max_retries=0)
    assert good.completions.create(model=MODEL_ID, prompt="the", max_tokens=2).usage.completion_tokens == 2
