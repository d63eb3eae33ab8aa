"""CPU speed rules measured on the machine itself, not assumed from its flags: one short probe, cached.

Decoding one token multiplies a single row by every weight matrix, so its speed is how fast the weights
stream from memory: the probe times exactly that (GPT-2-shaped matrices, more bytes than a model's layers
reuse from cache) in fp32, bf16 and bf16 prepacked for oneDNN, and reads the machine's bandwidth with a
plain sum. Training runs whole blocks forward and backward, where bf16 pays for its casts and its slower
elementwise work only past some width: the probe finds that width by timing one transformer block's forward and
backward under autocast against fp32, from the narrowest width up. Takes about a second, once per CPU,
thread count, torch version and instruction set (`~/.cache/hellogpt/cpu_rules.json`). A probe that other work
disturbed is used for its run and not cached.
"""

from __future__ import annotations

import functools
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from hellogpt.hardware.cache import cache_file, cpu_machine_key, probe_was_disturbed, read_json, write_json_atomically
from hellogpt.hardware.readings import CpuUseByOthers
from hellogpt.model.gpt import Block, GPTConfig
from hellogpt.model.packed import packed_linear, reorder_linear_weight

RULES_CACHE_FILE = "cpu_rules.json"
# The decode probe's weights: GPT-2's MLP matrix, repeated to this many fp32 bytes (a 124M model reads 0.5 GB).
DECODE_PROBE_SHAPE = (3072, 768)
DECODE_PROBE_FP32_BYTES = 192 * 2**20
PROBE_ROUNDS = 5
# Widths tried for training's bf16 threshold, narrowest first, and the probe block's input (batch x sequence).
# Timing the matmuls alone misled: on a 2-core Xeon with AMX a 128-wide matmul ran 4-5x faster in bf16, yet the
# quickstart model (4x128) trained 10-15% slower in bf16, as its block's forward and backward do (0.8x).
BF16_PROBE_WIDTHS = (128, 192, 256, 384, 512, 768)
BF16_PROBE_BATCH = 4
BF16_PROBE_SEQUENCE = 128
# How much faster than fp32 a block must run in bf16: the optimizer step, embeddings and data do not speed up.
BF16_TRAINING_MARGIN = 1.1
# A bf16 block this many times slower than fp32 ends the search at once: where bf16 is emulated (AVX2) it ran 10-13x
# slower, and timing every width would take over a minute; with native bf16 it is 0.8-2x as fast.
BF16_HOPELESS_FACTOR = 4.0
# The decode probe streams GPT-2-wide matrices; narrower models are bound by per-op overhead, which it does not
# measure, and keep fp32 for decoding.
DECODE_RULE_MIN_WIDTH = 256
DECODE_KERNELS = ("float32", "bfloat16", "bfloat16 packed")


@dataclass(frozen=True)
class CpuRules:
    """What the probe measured: read bandwidth, seconds per decode-probe pass by kernel, training's bf16 width."""

    read_bytes_per_second: float
    decode_seconds: dict[str, float]
    bf16_min_width: Optional[int]

    @property
    def decode_dtype(self) -> torch.dtype:
        """bf16 when some bf16 kernel streams the (half as many) bytes faster than fp32, even emulated."""
        bf16 = min(self.decode_seconds.get(name, float("inf")) for name in DECODE_KERNELS[1:])
        return torch.bfloat16 if bf16 < self.decode_seconds["float32"] else torch.float32

    @property
    def pack_bf16(self) -> bool:
        """Whether oneDNN's prepacked bf16 weights beat plain `F.linear` here."""
        packed = self.decode_seconds.get("bfloat16 packed")
        return packed is not None and packed < self.decode_seconds["bfloat16"]


def cpu_rules() -> CpuRules:
    """This machine's rules: from the cache, else measured now (about a second) and cached, unless other work
    disturbed the probe: then they serve this process (one probe per process: the dtype and the packing it picks
    must agree) and the next one measures again."""
    path = cache_file(RULES_CACHE_FILE)
    cached = read_json(path)
    key = cpu_machine_key()
    rules = _rules_from_json(cached.get(key))
    if rules is None:
        rules, disturbed = _measured_in_this_process(str(path), key)
        if not disturbed:
            write_json_atomically(path, {**cached, key: asdict(rules)})
    return rules


@functools.lru_cache(maxsize=None)
def _measured_in_this_process(path: str, key: str) -> tuple[CpuRules, bool]:
    """The probe's rules for a cache file and machine key, and whether other work disturbed them; once per process."""
    with CpuUseByOthers() as others:
        rules = measure_cpu_rules()
    return rules, probe_was_disturbed(others.cores)


def measure_cpu_rules() -> CpuRules:
    """Run the probes (decode kernels, bandwidth, bf16 width); the global RNG is left alone."""
    generator = torch.Generator().manual_seed(0)
    count = max(1, DECODE_PROBE_FP32_BYTES // (DECODE_PROBE_SHAPE[0] * DECODE_PROBE_SHAPE[1] * 4))
    weights = [torch.randn(DECODE_PROBE_SHAPE, generator=generator) for _ in range(count)]
    row = torch.randn(1, DECODE_PROBE_SHAPE[1], generator=generator)
    bandwidth = sum(w.numel() * w.element_size() for w in weights) / _median_seconds(lambda: [w.sum() for w in weights])
    decode_seconds = {"float32": _median_seconds(lambda: [F.linear(row, w) for w in weights])}
    weights = [w.bfloat16() for w in weights]  # one copy at a time: the probe's memory stays flat
    row = row.bfloat16()
    decode_seconds["bfloat16"] = _median_seconds(lambda: [F.linear(row, w) for w in weights])
    packed = [reorder_linear_weight(w) for w in weights]
    del weights
    if all(p is not None for p in packed):
        decode_seconds["bfloat16 packed"] = _median_seconds(lambda: [packed_linear(row, p, None) for p in packed])
    del packed
    return CpuRules(bandwidth, decode_seconds, _measure_bf16_min_width(generator))


def describe_cached_rules() -> dict[str, str]:
    """The cached rules of this machine for `hellogpt info`; measuring is left to the first use."""
    rules = _rules_from_json(read_json(cache_file(RULES_CACHE_FILE)).get(cpu_machine_key()))
    if rules is None:
        return {"not measured yet": "the first chat, serve or training run on this CPU measures them (~1 s)"}
    width = f">= {rules.bf16_min_width} wide" if rules.bf16_min_width else "never (fp32 was faster at every width)"
    return {
        "read bandwidth": f"{rules.read_bytes_per_second / 1e9:.1f} GB/s",
        "decode dtype": str(rules.decode_dtype).removeprefix("torch.") + f" (models >= {DECODE_RULE_MIN_WIDTH} wide)",
        "packed bf16 weights": "yes" if rules.pack_bf16 else "no",
        "bf16 for training": width,
    }


def _measure_bf16_min_width(generator: torch.Generator) -> Optional[int]:
    """The narrowest probed width at which a transformer block trains at least `BF16_TRAINING_MARGIN` times faster
    under bf16 autocast than in fp32 (forward and backward); wider ones are taken to gain at least as much, and are
    not timed (the widest take most of the probe's time). None when no width gains enough."""
    for width in BF16_PROBE_WIDTHS:
        with torch.random.fork_rng(devices=[]):  # the block's initialisation leaves the global RNG alone
            block = Block(GPTConfig(n_layer=1, n_head=max(1, width // 64), n_embd=width, bias=False, dropout=0.0))
        inputs = torch.randn(BF16_PROBE_BATCH, BF16_PROBE_SEQUENCE, width, generator=generator)
        fp32 = _median_seconds(lambda: _block_step(block, inputs, autocast=False))
        if _median_seconds(lambda: _block_step(block, inputs, autocast=True), rounds=1) > BF16_HOPELESS_FACTOR * fp32:
            return None  # bf16 emulated in software: an order of magnitude slower, and no width closes that
        bf16 = _median_seconds(lambda: _block_step(block, inputs, autocast=True))
        if fp32 >= BF16_TRAINING_MARGIN * bf16:
            return width
    return None


def _block_step(block: Block, inputs: torch.Tensor, autocast: bool) -> None:
    """One forward and backward of `block`, as a training step runs it (gradients accumulate, unused)."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        outputs = block(inputs, 0, None)
    outputs.float().sum().backward()


def _median_seconds(run, rounds: Optional[int] = None) -> float:
    """Median wall time of `rounds` (default `PROBE_ROUNDS`) runs after one warm-up (the CPU may be shared)."""
    run()
    timings = []
    for _ in range(rounds or PROBE_ROUNDS):
        start = time.perf_counter()
        run()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def _rules_from_json(data: object) -> Optional[CpuRules]:
    """Cached rules, or None when absent or malformed (then they are measured again)."""
    if not isinstance(data, dict):
        return None
    try:
        seconds = {str(name): float(value) for name, value in data["decode_seconds"].items()}
        width = data["bf16_min_width"]
        rules = CpuRules(float(data["read_bytes_per_second"]), seconds, None if width is None else int(width))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return rules if "float32" in seconds and "bfloat16" in seconds else None
