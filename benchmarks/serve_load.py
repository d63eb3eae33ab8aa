"""Claim: `hellogpt serve` keeps serving 1 to 64 concurrent clients with flat memory, its requests/s rising with the
batch and holding once the slots are full (the queue then adds to the time to first token).

A char model of the quickstart shape (4x128, block 128, random weights) behind the real `hellogpt serve
--checkpoint` in its own process on 127.0.0.1 (8 slots, the default); N clients, each a loop of greedy streamed
completions (16-token prompt, 64 new tokens) one after another, over connections kept open. Per level: requests
per second (all requests over the wall time), the median and 99th percentile of time to first text, and the
server's resident memory at the end and its peak (VmHWM) so far; the ratio is requests/s against the first level.

    python benchmarks/serve_load.py [--quick] [--clients 1,4,16,64] [--tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import httpx
import psutil
import torch

from hellogpt.data.tokenizer import CharTokenizer
from hellogpt.hardware.readings import describe_cpu
from hellogpt.model.gpt import GPT

sys.path.insert(0, str(Path(__file__).parent))
from serve import CHAR_VOCABULARY, CONCURRENT, SHAPES, LiveServer, prompts_for, saved_checkpoint  # noqa: E402

MAX_BATCH = CONCURRENT  # the slots benchmarks/serve.py's server starts with
DEFAULT_CLIENTS = (1, 4, 16, 64)
# Requests per level: enough that the slowest client's last request does not decide the wall time alone.
REQUESTS_PER_LEVEL = 128


def resident_mb(pid: int) -> tuple[float, float]:
    """(resident now, peak resident so far) of a process, in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    peak = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) / 1024
    return psutil.Process(pid).memory_info().rss / 2**20, peak


async def one_request(client: httpx.AsyncClient, prompt: str, tokens: int) -> float:
    """Stream one greedy completion; seconds to its first text."""
    body = {"prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": True}
    started = time.perf_counter()
    first = 0.0
    async with client.stream("POST", "v1/completions", json=body) as response:
        assert response.status_code == 200, response.status_code
        async for line in response.aiter_lines():
            if not first and line.startswith("data: {") and json.loads(line[6:])["choices"][0]["text"]:
                first = time.perf_counter() - started
    return first


async def level(url: str, prompts: list[str], clients: int, requests: int, tokens: int) -> tuple[float, list[float]]:
    """(wall seconds, first-token seconds of every request) for `clients` loops sharing `requests`."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        await one_request(client, prompts[0], tokens)  # warm-up
        firsts: list[float] = []

        async def loop(index: int) -> None:
            for turn in range(index, requests, clients):
                firsts.append(await one_request(client, prompts[turn % len(prompts)], tokens))

        started = time.perf_counter()
        await asyncio.gather(*(loop(index) for index in range(clients)))
        return time.perf_counter() - started, firsts


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 requests a level, 16 tokens: checks that it runs")
    parser.add_argument("--clients", default=",".join(map(str, DEFAULT_CLIENTS)))
    parser.add_argument("--tokens", type=int, default=None, help="new tokens per request (default 64)")
    args = parser.parse_args()
    tokens = args.tokens or (16 if args.quick else 64)
    requests = 16 if args.quick else REQUESTS_PER_LEVEL

    from rich.console import Console
    from rich.table import Table

    torch.manual_seed(0)
    tokenizer = CharTokenizer(CHAR_VOCABULARY)
    folder = tempfile.mkdtemp(prefix="hellogpt-serve-load-")
    checkpoint = saved_checkpoint(GPT(SHAPES["char"]), tokenizer, folder)
    prompts = [tokenizer.decode(ids) for ids in prompts_for(tokenizer, 16)]
    server = LiveServer(checkpoint)  # its own client (8 connections) is left unused
    table = Table(title=f"hellogpt serve under load: char 4x128, {MAX_BATCH} slots, streamed greedy completions of "
                  f"{tokens} tokens after 16, {requests} requests a level (torch {torch.__version__})")
    for column in ("clients", "requests/s", "tokens/s", "first token p50", "first token p99", "RSS", "peak RSS", "ratio"):
        table.add_column(column, justify="right")
    try:
        idle_rss, _ = resident_mb(server.process.pid)
        reference: Optional[float] = None  # requests/s of the first level (one client, by default)
        for clients in (int(count) for count in args.clients.split(",")):
            seconds, firsts = asyncio.run(level(server.url, prompts, clients, requests, tokens))
            rss, peak = resident_mb(server.process.pid)
            reference = reference or requests / seconds
            table.add_row(
                str(clients), f"{requests / seconds:.1f}", f"{requests * tokens / seconds:.0f}",
                f"{statistics.median(firsts) * 1000:.0f} ms", f"{percentile(firsts, 0.99) * 1000:.0f} ms",
                f"{rss:.0f} MB", f"{peak:.0f} MB", f"{requests / seconds / reference:.2f}x requests/s",
            )
    finally:
        server.close()
        Path(checkpoint).unlink(missing_ok=True)
        Path(folder).rmdir()
    Console(width=max(Console().width, 120)).print(table)
    print(f"server RSS idle after start-up: {idle_rss:.0f} MB")
    print(f"CPU: {describe_cpu()}; {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}; "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")


if __name__ == "__main__":
    main()
