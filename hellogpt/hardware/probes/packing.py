"""Decides whether a bf16 model's weights are prepacked for oneDNN to decode on a CPU; a rule would not do, because
whether oneDNN's packed kernel beats plain `F.linear` for one row depends on the CPU, the torch build and its ISA.

Speed only, never a dtype (the numbers a run computes come from `devices.auto_dtype`'s rule): packed or not, the
logits are the same. With `system.measure: off` nothing is packed.

Decoding one token multiplies a single row by every weight matrix, so its speed is how fast the weights
stream from memory: the probe times exactly that (GPT-2-shaped matrices, more bytes than a model's layers
reuse from cache) in bf16 and bf16 prepacked for oneDNN, and reads the machine's bandwidth with a plain sum.
Takes under a second, once per CPU, thread count, torch version and instruction set
(`~/.cache/hellogpt/cpu_rules.json`). A probe that other work disturbed is used for its run and not cached.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from hellogpt.hardware.probes import measuring
from hellogpt.hardware.probes.cache import (
    CpuUseByOthers, cache_file, cpu_machine_key, probe_was_disturbed, read_json, write_json_atomically,
)
from hellogpt.hardware.probes.harness import median_seconds
from hellogpt.model.packed import packed_linear, reorder_linear_weight

RULES_CACHE_FILE = "cpu_rules.json"
# The decode probe's weights: GPT-2's MLP matrix, repeated to this many fp32 bytes (a 124M model reads 0.5 GB).
DECODE_PROBE_SHAPE = (3072, 768)
DECODE_PROBE_FP32_BYTES = 192 * 2**20
PROBE_ROUNDS = 5


@dataclass(frozen=True)
class CpuRules:
    """What the probe measured: read bandwidth, and seconds per decode-probe pass by bf16 kernel."""

    read_bytes_per_second: float
    decode_seconds: dict[str, float]

    @property
    def pack_bf16(self) -> bool:
        """Whether oneDNN's prepacked bf16 weights beat plain `F.linear` here."""
        packed = self.decode_seconds.get("bfloat16 packed")
        return packed is not None and packed < self.decode_seconds["bfloat16"]


def should_pack_bf16(measure: Optional[str] = None) -> bool:
    """Whether to prepack bf16 CPU weights: measured (cached) under `system.measure: auto`, never under `off`."""
    return measuring(measure) and cpu_rules().pack_bf16


def cpu_rules() -> CpuRules:
    """This machine's rules: from the cache, else measured now (about a second) and cached, unless other work
    disturbed the probe: then they serve this process (one probe per process: every model it packs is packed
    alike) and the next one measures again."""
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
    """Run the probes (bf16 decode kernels, bandwidth); the global RNG is left alone."""
    generator = torch.Generator().manual_seed(0)
    count = max(1, DECODE_PROBE_FP32_BYTES // (DECODE_PROBE_SHAPE[0] * DECODE_PROBE_SHAPE[1] * 4))
    weights = [torch.randn(DECODE_PROBE_SHAPE, generator=generator) for _ in range(count)]
    row = torch.randn(1, DECODE_PROBE_SHAPE[1], generator=generator)
    read_seconds = median_seconds(lambda: [w.sum() for w in weights], PROBE_ROUNDS)
    bandwidth = sum(w.numel() * w.element_size() for w in weights) / max(read_seconds, 1e-9)
    weights = [w.bfloat16() for w in weights]  # one copy at a time: the probe's memory stays flat
    row = row.bfloat16()
    decode_seconds = {"bfloat16": median_seconds(lambda: [F.linear(row, w) for w in weights], PROBE_ROUNDS)}
    packed = [reorder_linear_weight(w) for w in weights]
    del weights
    if all(p is not None for p in packed):
        decode_seconds["bfloat16 packed"] = median_seconds(
            lambda: [packed_linear(row, p, None) for p in packed], PROBE_ROUNDS
        )
    del packed
    return CpuRules(bandwidth, decode_seconds)


def describe_cached_rules() -> dict[str, str]:
    """The cached rules of this machine for `hellogpt info`; measuring is left to the first use."""
    rules = _rules_from_json(read_json(cache_file(RULES_CACHE_FILE)).get(cpu_machine_key()))
    if rules is None:
        return {
            "not measured yet": "the first chat or serve of a bf16 model on this CPU measures them "
            "(~1 s; never with system.measure=off)"
        }
    return {
        "read bandwidth": f"{rules.read_bytes_per_second / 1e9:.1f} GB/s",
        "packed bf16 weights": "yes" if rules.pack_bf16 else "no",
    }


def _rules_from_json(data: object) -> Optional[CpuRules]:
    """Cached rules, or None when absent or malformed (then they are measured again)."""
    if not isinstance(data, dict):
        return None
    try:
        seconds = {str(name): float(value) for name, value in data["decode_seconds"].items()}
        rules = CpuRules(float(data["read_bytes_per_second"]), seconds)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return rules if "bfloat16" in seconds else None
