"""`hellogpt serve` as a user runs it: a real process, its startup lines, requests, and Ctrl-C."""

from __future__ import annotations

import json
import re
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import httpx
import pytest
from typer.testing import CliRunner

from hellogpt.cli import app
from hellogpt.serve.server import bind_socket
from tests.cli.test_chat import write_checkpoint
from tests.serve.conftest import char_tokenizer, tiny_model

STARTUP_SECONDS = 60
URL_PATTERN = re.compile(r"chat page\s+(http://\S+/)")


@pytest.fixture()
def checkpoint(tmp_path: Path) -> Path:
    tokenizer = char_tokenizer()
    return write_checkpoint(tmp_path / "tiny.pt", tiny_model(tokenizer), tokenizer, max_new_tokens=6, temperature=0.0)


class Output:
    """A process's output lines, read on a thread of their own as they come."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.lines: queue.Queue[Optional[str]] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def until(self, pattern: re.Pattern[str]) -> list[str]:
        """Lines up to the first matching one."""
        seen: list[str] = []
        deadline = time.monotonic() + STARTUP_SECONDS
        while (line := self.lines.get(timeout=max(0.0, deadline - time.monotonic()))) is not None:
            seen.append(line)
            if pattern.search(line):
                return seen
        raise AssertionError(f"the server did not start: {seen}")

    def rest(self) -> str:
        """Everything not read yet, once the process has ended."""
        self._thread.join(STARTUP_SECONDS)
        remaining = []
        while not self.lines.empty() and (line := self.lines.get_nowait()) is not None:
            remaining.append(line)
        return "\n".join(remaining)


@contextmanager
def serving(*args: str) -> Iterator[tuple[subprocess.Popen, str, list[str], Output]]:
    """`hellogpt serve ARGS` in a process of its own; yields it, its URL, its startup lines and the rest of its
    output. The process is always ended."""
    process = subprocess.Popen(
        [sys.executable, "-m", "hellogpt", "serve", *args, "--device", "cpu", "--set", "system.dtype=float32"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output = Output(process)
    try:
        lines = output.until(URL_PATTERN)
        yield process, URL_PATTERN.search("\n".join(lines)).group(1), lines, output
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        output.rest()  # the reader has seen the end before the pipe closes
        process.stdout.close()


@pytest.mark.slow
def test_startup_says_where_and_what_and_ctrl_c_ends_streams_cleanly_with_exit_0(checkpoint: Path) -> None:
    with serving("--checkpoint", str(checkpoint), "--port", "0") as (process, url, lines, output):
        assert url.startswith("http://127.0.0.1:")
        assert "'tiny'" in lines[0] and "cpu float32" in lines[0]
        assert httpx.post(url + "v1/completions", json={"prompt": "the"}, timeout=30).json()["choices"][0]["text"]
        events: list[str] = []
        body = {"prompt": "the raven", "max_tokens": 8192, "stream": True}
        with httpx.stream("POST", url + "v1/completions", json=body, timeout=30) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events.append(line[len("data: "):])
                if len(events) == 3:
                    process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
        rest = output.rest()
    assert json.loads(events[-1])["error"]["code"] == "server_shutdown"
    assert "stopped" in rest
    assert "Traceback" not in rest


@pytest.mark.slow
def test_listening_beyond_this_machine_without_a_key_warns(checkpoint: Path) -> None:
    with serving("-k", str(checkpoint), "--host", "0.0.0.0", "--port", "0") as (process, url, lines, _):
        assert any(line.startswith("warning: listening on 0.0.0.0 without --api-key") for line in lines)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0


@pytest.mark.slow
def test_a_port_in_use_is_one_line_naming_it(checkpoint: Path) -> None:
    taken = bind_socket("127.0.0.1", 0)
    try:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "hellogpt", "serve", "-k", str(checkpoint), "--port", str(port), "--device", "cpu"],
            capture_output=True, text=True, timeout=STARTUP_SECONDS,
        )
    finally:
        taken.close()
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: port {port} on 127.0.0.1 is already in use: choose another with --port"


def test_a_model_is_required() -> None:
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2
    assert "which model?" in result.output


def test_a_missing_checkpoint_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["serve", "-k", str(tmp_path / "nothing.pt")])
    assert result.exit_code == 2
    assert "nothing.pt" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_a_chat_checkpoint_is_served_as_a_chat_model(tmp_path: Path) -> None:
    from tests.chat_models import write_chat_checkpoint

    checkpoint = write_chat_checkpoint(tmp_path / "tiny_chat.pt")
    with serving("-k", str(checkpoint), "--port", "0") as (process, url, _, _):
        model = httpx.get(url + "v1/models", timeout=30).json()["data"][0]
        messages = [{"role": "user", "content": "hello"}]
        answer = httpx.post(url + "v1/chat/completions", json={"messages": messages}, timeout=30).json()
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
    assert model["template"] == "chatml"  # what the chat page shows as "chat model"
    assert answer["choices"][0]["message"]["content"] == "hi."  # ended by <|im_end|>, not the 20 max_new_tokens
