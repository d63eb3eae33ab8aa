"""Getting a model ready to decode on this machine: its weights' device, dtype and layout, and its threads.

The decoding itself (sampling, the per-sequence state, the batched step over one KV cache) is `hellogpt.decode`.
"""

from __future__ import annotations

import statistics
import time

import torch

from hellogpt.errors import UserError
from hellogpt.decode.cache import BatchedKVCache, prefill_slot
from hellogpt.decode.step import DecodingModel, decode_step
from hellogpt.model.gpt import GPT
from hellogpt.model.packed import can_pack_linear_layers, pack_linear_layers
from hellogpt.model.quantize import quantize_int8

# Decoding steps timed per thread count by `choose_decode_threads`, and the step time from which a model is
# taken to be bound by memory reads (more threads then stream faster; timing one thread would only cost time).
THREAD_PROBE_STEPS = 5
THREAD_PROBE_MAX_STEP_SECONDS = 0.02
THREAD_PROBE_SECONDS = 0.12
THREAD_PROBE_ROUNDS = 3


def prepare_for_inference(model: GPT, device: torch.device, dtype: torch.dtype) -> GPT:
    """Move and cast the weights once (no per-op autocast), switch off dropout, and prepack bf16 CPU weights
    where this machine's probe measured that packing pays (`hellogpt.hardware.rules`)."""
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    if not can_pack_linear_layers(model.lm_head.weight):
        return model
    from hellogpt.hardware.rules import cpu_rules

    return pack_linear_layers(model) if cpu_rules().pack_bf16 else model


def choose_decode_threads(model: GPT) -> int:
    """Set torch's intra-op threads to whichever decodes `model` faster here, all of them or one, and return it.

    A token of a small model is a few dozen tiny matrix products, where waking the other threads costs more than
    they save (the quickstart shape decodes 3.4x faster on one thread of a 2-core Xeon); a large model is bound
    by memory reads, which more threads stream faster. Where the cut-over lies depends on the CPU, so it is
    timed on the model itself: a few decoding steps each way, skipped when one step is long enough to be
    bound by memory (then the probe would only cost time).
    """
    available = torch.get_num_threads()
    steps = min(THREAD_PROBE_STEPS, model.config.block_size - 2)
    if model.transformer.wte.weight.device.type != "cpu" or available == 1 or steps < 1:
        return available
    with_all = _median_decode_step_seconds(model, steps)
    if with_all >= THREAD_PROBE_MAX_STEP_SECONDS:
        return available
    # Steps of a small model are short and noisy: time enough of them to fill THREAD_PROBE_SECONDS each way, in
    # rounds that alternate (a moment of load, such as a server's own start-up, then slows both alike).
    steps = max(steps, min(model.config.block_size - 2, int(THREAD_PROBE_SECONDS / THREAD_PROBE_ROUNDS / max(with_all, 1e-6))))
    timings: dict[int, list[float]] = {available: [], 1: []}
    for _ in range(THREAD_PROBE_ROUNDS):
        for threads in timings:
            torch.set_num_threads(threads)
            timings[threads].append(_median_decode_step_seconds(model, steps))
    chosen = 1 if statistics.median(timings[1]) < statistics.median(timings[available]) else available
    torch.set_num_threads(chosen)
    return chosen


@torch.inference_mode()
def _median_decode_step_seconds(model: GPT, steps: int) -> float:
    """Median time of one cached decoding step, after one warm-up step (the measurement moves no RNG)."""
    cache = BatchedKVCache(model, slots=1, max_length=steps + 2)
    decoding = DecodingModel(model)
    prefill_slot(model, cache, 0, [0])
    decode_step(decoding, cache, {0: 0})
    timings = []
    for _ in range(steps):
        started = time.perf_counter()
        decode_step(decoding, cache, {0: 0})
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def prepare_int8_for_inference(model: GPT, device: torch.device) -> GPT:
    """fp32 activations over int8 weights (`model/quantize.py`): a quarter of fp32's bytes per token. CPU only."""
    if device.type != "cpu":
        raise UserError(
            f"int8 weights run on the CPU only (torch's int8 kernels), not {device.type}: "
            "use --device cpu, or drop --quantize (GPUs decode in bf16/fp16)"
        )
    model = model.to(device=device, dtype=torch.float32).eval().requires_grad_(False)
    return quantize_int8(model)
