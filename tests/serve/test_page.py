"""The chat page in a real headless Chromium (Debian's, driven by Playwright): type, send, watch it stream, stop.

Where no browser is installed (`apt-get install -y chromium`) or Playwright is missing, the test is skipped
and says why (pytest -ra prints the reason).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serve.conftest import LiveServer, StartServer
from tests.serve.test_batching import slow_steps, wait_until_idle

CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run", "--disable-sync",
]
PHONE = {"width": 375, "height": 740}
TIMEOUT_MS = 15_000


def chromium_path() -> str:
    found = next((path for path in CHROMIUM_PATHS if Path(path).exists()), None) or shutil.which("chromium")
    if found is None:
        pytest.skip(f"no Chromium at {' or '.join(CHROMIUM_PATHS)}: install it with `apt-get install -y chromium`")
    return found


@pytest.fixture()
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed: pip install -e '.[dev]'")
    executable = chromium_path()
    with sync_api.sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        except sync_api.Error as error:
            pytest.skip(f"Chromium at {executable} does not start here: {str(error).splitlines()[0]}")
        try:
            yield browser
        finally:
            browser.close()


@pytest.mark.slow
def test_the_page_streams_a_reply_and_its_stop_button_stops_it(
    browser: Any, start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_steps(monkeypatch, 0.005)  # a reply takes long enough to be seen arriving
    server = start_server()
    page = browser.new_page(viewport=PHONE)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(server.url)
    page.wait_for_function("document.getElementById('model-name').textContent.startsWith('tiny')", timeout=TIMEOUT_MS)

    page.fill("#input", "hello")
    page.press("#input", "Enter")
    reply = page.locator(".message.assistant").last
    page.wait_for_function(  # part of the reply is shown while the rest is still coming
        "(() => { const m = [...document.querySelectorAll('.message.assistant')].pop();"
        " return m && m.classList.contains('streaming') && m.textContent.length > 0; })()",
        timeout=TIMEOUT_MS,
    )
    page.wait_for_selector(".message.assistant:not(.streaming)", timeout=TIMEOUT_MS)
    assert page.locator(".message.user").last.text_content() == "hello"
    assert reply.text_content()

    page.click("#toggle-settings")
    page.fill("#max-tokens", "8000")
    page.fill("#system", "hello there")  # characters the tiny char-level model knows
    bodies: list[Any] = []
    page.on("request", lambda request: bodies.append(request.post_data_json) if request.method == "POST" else None)
    page.fill("#input", "tell me more")
    page.click("#send")
    page.wait_for_function(
        "[...document.querySelectorAll('.message.assistant')].pop().textContent.length > 5", timeout=TIMEOUT_MS
    )
    page.click("#stop")
    second = page.locator(".message.assistant").last
    second.locator(".note", has_text="stopped").wait_for(timeout=TIMEOUT_MS)
    assert page.is_visible("#send") and not page.is_visible("#stop")
    assert wait_until_idle(server)  # the abandoned reply left the batch
    shown = len(second.text_content())
    time.sleep(0.3)
    assert len(second.text_content()) == shown

    assert [message["role"] for message in bodies[0]["messages"]] == ["system", "user", "assistant", "user"]
    assert bodies[0]["messages"][0]["content"] == "hello there"  # the settings' system message goes first
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]  # nothing wider than a phone
    assert all(url.startswith(server.url) for url in requested), requested  # nothing fetched from elsewhere


def test_the_page_is_one_self_contained_file(server: LiveServer) -> None:
    html = httpx.get(server.url).text
    assert html.startswith("<!doctype html>")
    assert "<script src" not in html and "<link" not in html and "http://" not in html and "https://" not in html
