"""Claim: `hellogpt serve` decodes 8 concurrent requests at least 3x faster than the same 8 one after another,
and serves one request within 10 % of `chat`'s tokens/s.

For a char model of the quickstart shape (4x128, block 128, vocabulary 103) and a GPT-2-124M-shaped one (12x768,
block 1024, vocabulary 50257), random weights, the dtype `system.dtype: auto` picks: greedy streamed completions of
N tokens after a 16-token prompt through the real server (`hellogpt serve --checkpoint` in its own process on
127.0.0.1, as a user runs it; the client is httpx in this process, as a user's program is its own, keeping its
connections open between requests), against
what `chat` runs in this process (`ChatSession.respond`: the same prompt text encoded, tokens decoded to text,
its tokens/s the one `chat` prints after a reply). Rows: chat alone; the server with one request; 8 requests one after another; 8 at once. Medians over repeats,
runs interleaved so that a busy CPU slows all alike, each after a short pause (see SETTLE_SECONDS). OpenMP runs as the environment says (see benchmarks/generate.py).

    python benchmarks/serve.py [--quick] [--repeats N] [--models char,gpt2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import torch

from hellogpt.checkpoints.format import Checkpoint, save_checkpoint
from hellogpt.data.tokenizer import CharTokenizer, Tokenizer, gpt2_tokenizer
from hellogpt.chat import ChatSession
from hellogpt.config.schema import SampleConfig
from hellogpt.generate import choose_decode_threads, prepare_for_inference
from hellogpt.hardware.devices import choose_dtype, dtype_name
from hellogpt.hardware.readings import describe_cpu
from hellogpt.model.gpt import GPT, GPTConfig

PROMPT_LENGTH = 16
CONCURRENT = 8
CHAR_VOCABULARY = "".join(chr(code) for code in range(32, 127)) + "\n\t\u00e9\u00e8\u00e0\u00fc\u00f6\u00e4\u2014"
SHAPES = {
    "char": GPTConfig(n_layer=4, n_head=4, n_embd=128, block_size=128, vocab_size=len(CHAR_VOCABULARY), bias=True, dropout=0.0, arch="gpt2"),
    "gpt2": GPTConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257, bias=True, dropout=0.0, arch="gpt2"),
}
DEFAULT_TOKENS = {"char": 200, "gpt2": 48}
CHAT_ROW = "chat, 1 reply"
# A pause before each timed run: OpenMP threads spin for a few milliseconds after their last parallel work (7 ms
# of CPU here), and the previous run's (the server's or this process's) would take a core from the next one.
SETTLE_SECONDS = 0.1


@dataclass
class Run:
    """One measured run: wall seconds, tokens produced, and the time to each request's first token."""

    seconds: float
    tokens: int
    first_token_seconds: list[float]

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds


class LiveServer:
    """`hellogpt serve` on a free local port in its own process, stopped (Ctrl-C, as a user would) by `close`, and
    one HTTP client for it that keeps its connections open between requests, as a user's program would."""

    def __init__(self, checkpoint: str) -> None:
        command = [sys.executable, "-m", "hellogpt", "serve", "--checkpoint", checkpoint, "--port", "0",
                   "--max-batch", str(CONCURRENT), "--set", "sample.temperature=0"]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if "chat page" in line:
                self.url = line.split()[-1]
                break
        else:
            raise RuntimeError(f"hellogpt serve did not start (exit {self.process.wait()})")
        self.loop = asyncio.new_event_loop()
        limits = httpx.Limits(max_connections=CONCURRENT, max_keepalive_connections=CONCURRENT)
        self.client = httpx.AsyncClient(base_url=self.url, timeout=600, limits=limits)

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()
        self.process.send_signal(2)  # SIGINT: a clean stop
        self.process.wait(timeout=60)


def saved_checkpoint(model: GPT, tokenizer: Tokenizer, folder: str) -> str:
    """The random-weight model as a checkpoint file that `hellogpt serve` loads."""
    path = f"{folder}/bench.pt"
    save_checkpoint(path, Checkpoint(model_args=model.config, model=model.state_dict(), tokenizer=tokenizer.description()))
    return path


async def one_request(client: httpx.AsyncClient, prompt: str, new_tokens: int, start: float) -> tuple[int, float]:
    """Stream one greedy completion; (tokens produced, seconds from `start` to its first text)."""
    body = {"prompt": prompt, "max_tokens": new_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    first, tokens = 0.0, 0
    async with client.stream("POST", "v1/completions", json=body) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[len("data: "):])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            elif not first and chunk["choices"] and chunk["choices"][0]["text"]:
                first = time.perf_counter() - start
    return tokens, first


def through_server(server: LiveServer, prompts: list[str], new_tokens: int, together: bool) -> Run:
    async def run() -> Run:
        start = time.perf_counter()
        if together:
            results = await asyncio.gather(*(one_request(server.client, prompt, new_tokens, start) for prompt in prompts))
        else:
            results = [await one_request(server.client, prompt, new_tokens, time.perf_counter()) for prompt in prompts]
        seconds = time.perf_counter() - start
        return Run(seconds, sum(tokens for tokens, _ in results), [first for _, first in results])

    return server.loop.run_until_complete(run())


def through_chat(session: ChatSession, prompt: str) -> Run:
    start = time.perf_counter()
    first = 0.0
    for _ in session.respond(prompt):
        first = first or time.perf_counter() - start
    assert session.last_reply is not None
    return Run(time.perf_counter() - start, session.last_reply.tokens, [first])


def prompts_for(tokenizer: Tokenizer, count: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randint(0, tokenizer.vocab_size, (PROMPT_LENGTH,), generator=generator).tolist() for _ in range(count)]


def measure(name: str, new_tokens: int, repeats: int, threads: int) -> dict[str, tuple[float, float, float]]:
    """Rows of (median tokens/s, median wall seconds, median first-token seconds) for one model shape."""
    torch.set_num_threads(threads)  # as a fresh `chat` starts: the previous shape's thread choice undone
    tokenizer: Tokenizer = gpt2_tokenizer() if name == "gpt2" else CharTokenizer(CHAR_VOCABULARY)
    torch.manual_seed(0)
    config = SHAPES[name]
    model = GPT(config)
    folder = tempfile.mkdtemp(prefix="hellogpt-serve-bench-")
    server = LiveServer(saved_checkpoint(model, tokenizer, folder))
    model = prepare_for_inference(model, torch.device("cpu"), choose_dtype("auto", "cpu", config))
    choose_decode_threads(model)  # as `chat` (and the server) do
    prompt_ids = prompts_for(tokenizer, CONCURRENT)
    prompts = [tokenizer.decode(ids) for ids in prompt_ids]
    session = ChatSession(model, tokenizer, SampleConfig(max_new_tokens=new_tokens, temperature=0.0, top_k=None))
    rows: dict[str, Callable[[], Run]] = {
        CHAT_ROW: lambda: through_chat(session, prompts[0]),
        "serve, 1 request": lambda: through_server(server, prompts[:1], new_tokens, together=False),
        f"serve, {CONCURRENT} one after another": lambda: through_server(server, prompts, new_tokens, together=False),
        f"serve, {CONCURRENT} at once": lambda: through_server(server, prompts, new_tokens, together=True),
    }
    try:
        for run in rows.values():  # warm-up
            run()
        collected: dict[str, list[Run]] = {row: [] for row in rows}
        for _ in range(repeats):
            for row, run in rows.items():
                time.sleep(SETTLE_SECONDS)
                collected[row].append(run())
    finally:
        server.close()
        Path(folder, "bench.pt").unlink(missing_ok=True)
        Path(folder).rmdir()
    return {
        row: (
            statistics.median(run.tokens_per_second for run in runs),
            statistics.median(run.seconds for run in runs),
            statistics.median(statistics.median(run.first_token_seconds) for run in runs),
        )
        for row, runs in collected.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat, fewer tokens: checks that it runs")
    parser.add_argument("--repeats", type=int, default=None, help="runs per row, median reported (default 5)")
    parser.add_argument("--models", default="char,gpt2")
    parser.add_argument("--tokens", type=int, default=None, help="tokens per request (default: char 200, gpt2 48)")
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 5)

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"hellogpt serve: greedy streamed completions after {PROMPT_LENGTH} tokens, "
                  f"{torch.get_num_threads()} threads, median of {repeats} (torch {torch.__version__})")
    for column in ("model", "dtype", "run", "tokens/request", "tokens/s", "wall s", "first token ms", "ratio"):
        table.add_column(column, justify="right")
    threads = torch.get_num_threads()
    for name in args.models.split(","):
        new_tokens = args.tokens or (20 if args.quick else DEFAULT_TOKENS[name])
        results = measure(name, new_tokens, repeats, threads)
        chat_speed = results[CHAT_ROW][0]
        sequential_wall = results[f"serve, {CONCURRENT} one after another"][1]
        dtype = dtype_name(choose_dtype("auto", "cpu", SHAPES[name]))
        for row, (speed, wall, first) in results.items():
            if row.startswith(f"serve, {CONCURRENT}"):
                ratio = f"{sequential_wall / wall:.2f}x faster" if row.endswith("at once") else "1.00x (reference)"
            else:
                ratio = f"{speed / chat_speed:.2f}x chat's tok/s"
            table.add_row(name, dtype, row, str(new_tokens), f"{speed:.1f}", f"{wall:.2f}", f"{first * 1000:.0f}", ratio)
    Console(width=max(Console().width, 130)).print(table)
    print(f"CPU: {describe_cpu()}; {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}; "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")


if __name__ == "__main__":
    main()
