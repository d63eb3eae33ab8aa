"""A keyless server on loopback answers this machine's own clients and pages only: no DNS rebinding, no drive-by
requests from other sites (Ollama's CVE-2024-28224), unless --allow-origin opens it."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from hellogpt.serve.guards import is_loopback_host
from tests.serve.conftest import LiveServer, StartServer
from tests.cli.test_serve import checkpoint, serving  # noqa: F401 (a fixture)

BODY = {"prompt": "the", "max_tokens": 2}


def own_origin(server: LiveServer) -> str:
    return server.url.rstrip("/")


def completion(server: LiveServer, headers: dict[str, str], **options) -> httpx.Response:
    return httpx.post(server.api + "/completions", json=BODY, headers=headers, timeout=30, **options)


def assert_refused(reply: httpx.Response, code: str, *words: str) -> None:
    assert reply.status_code == 403, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code
    for word in words:
        assert word in error["message"]


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "192.168.1.20:8000", "localhost.evil.example"])
def test_a_host_that_is_not_this_machine_is_refused(server: LiveServer, host: str) -> None:
    assert_refused(completion(server, {"Host": host}), "host_not_allowed", repr(host))
    assert_refused(httpx.get(server.url, headers={"Host": host}), "host_not_allowed")  # the page too


@pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1:9", "[::1]:8000", "localhost", "127.0.0.2"])
def test_loopback_hosts_are_answered(server: LiveServer, host: str) -> None:
    assert completion(server, {"Host": host}).status_code == 200


def test_loopback_host_names() -> None:
    assert is_loopback_host("LOCALHOST:1") and is_loopback_host("[::1]") and is_loopback_host("127.1.2.3:80")
    assert not any(map(is_loopback_host, ["", "::1", "evil", "[::1", "localhost.", "0.0.0.0:8000", "10.0.0.1"]))


def test_a_cross_origin_request_from_a_browser_is_refused(server: LiveServer) -> None:
    # What a page on another site sends with fetch(url, {method: "POST", body, mode: "no-cors"}).
    drive_by = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
    reply = httpx.post(server.api + "/completions", content=b'{"prompt": "the"}', headers=drive_by, timeout=30)
    assert_refused(reply, "origin_not_allowed", "http://evil.example", "--allow-origin")
    assert_refused(completion(server, {"Origin": "null"}), "origin_not_allowed")
    assert_refused(completion(server, {"Origin": "http://localhost:3000"}), "origin_not_allowed")  # another local port
    assert_refused(completion(server, {"Sec-Fetch-Site": "cross-site"}), "origin_not_allowed", "cross-site")
    assert_refused(httpx.get(server.api + "/models", headers={"Sec-Fetch-Site": "cross-site"}), "origin_not_allowed")
    preflight = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    assert_refused(httpx.options(server.api + "/completions", headers=preflight), "origin_not_allowed")


def test_the_servers_own_page_and_plain_clients_are_answered(server: LiveServer) -> None:
    assert completion(server, {"Origin": own_origin(server), "Sec-Fetch-Site": "same-origin"}).status_code == 200
    assert completion(server, {}).status_code == 200  # curl, the openai client: no Origin
    # A link to the chat page from another site is an ordinary navigation.
    assert httpx.get(server.url, headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}).status_code == 200


def test_allow_origin_lets_that_origin_in_with_cors_headers(start_server: StartServer) -> None:
    server = start_server(allowed_origins=("http://localhost:3000",))
    reply = completion(server, {"Origin": "http://localhost:3000"})
    assert reply.status_code == 200
    assert reply.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    preflight = httpx.options(server.api + "/completions", headers={
        "Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, authorization",
    })
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert preflight.headers["Access-Control-Allow-Headers"] == "content-type, authorization"
    assert_refused(completion(server, {"Origin": "http://evil.example"}), "origin_not_allowed")


def test_allow_origin_star_lets_every_origin_in(start_server: StartServer) -> None:
    server = start_server(allowed_origins=("*",))
    reply = completion(server, {"Origin": "http://evil.example"})
    assert reply.status_code == 200 and reply.headers["Access-Control-Allow-Origin"] == "*"


def test_with_an_api_key_the_key_guards_the_server(start_server: StartServer) -> None:
    server = start_server(api_key="s3cret")
    headers = {"Host": "my-box.lan:8000", "Origin": "http://my-box.lan:3000", "Authorization": "Bearer s3cret"}
    assert completion(server, headers).status_code == 200
    assert completion(server, {**headers, "Authorization": "Bearer wrong"}).status_code == 401


@pytest.mark.slow
def test_the_serve_command_takes_the_limits_and_allow_origin(checkpoint: Path) -> None:  # noqa: F811
    flags = ["--allow-origin", "http://localhost:3000", "--max-body-bytes", "1000", "--max-waiting", "3"]
    with serving("-k", str(checkpoint), "--port", "0", *flags) as (process, url, _, output):
        allowed = httpx.post(url + "v1/completions", json=BODY, headers={"Origin": "http://localhost:3000"}, timeout=30)
        assert allowed.status_code == 200 and allowed.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
        other = httpx.post(url + "v1/completions", json=BODY, headers={"Origin": "http://evil.example"}, timeout=30)
        assert other.status_code == 403
        assert httpx.post(url + "v1/completions", json={**BODY, "user": "x" * 1000}, timeout=30).status_code == 413
        assert httpx.get(url + "health", headers={"Host": "evil.example"}).status_code == 403
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
        assert "Traceback" not in output.rest()
