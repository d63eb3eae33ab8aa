"""Sampling and the streaming token generator.

Sampling is a handful of pure functions on logits (temperature, top-k, top-p), kept apart
from the loop that feeds the model one token at a time through its KV cache, as in litgpt's
`generate/base.py`. The loop yields token ids; `StreamingDecoder` turns them into text
pieces that never split a multi-byte character.
"""

from __future__ import annotations

import codecs
import statistics
import time
from collections.abc import Iterator, Sequence
from typing import Callable, Optional, Protocol

import torch

from hellogpt.errors import UserError
from hellogpt.model.decoding import BatchedKVCache, DecodingModel, decode_step, prefill_slot
from hellogpt.model.gpt import GPT
from hellogpt.model.packed import can_pack_linear_layers, pack_linear_layers
from hellogpt.model.quantize import quantize_int8

# When the context outgrows block_size, the cache restarts from the most recent half of it:
# one prefill of block_size/2 tokens buys block_size/2 cheap decoding steps, so the re-prefill
# costs a few percent of the decoding time while the model still sees at least half a window.
SLIDE_KEEP_FRACTION = 0.5
# Decoding steps timed per thread count by `choose_decode_threads`, and the step time from which a model is
# taken to be bound by memory reads (more threads then stream faster; timing one thread would only cost time).
THREAD_PROBE_STEPS = 5
THREAD_PROBE_MAX_STEP_SECONDS = 0.02
THREAD_PROBE_SECONDS = 0.12
THREAD_PROBE_ROUNDS = 3
# A divisor below float32's smallest normal number rounds to 0 (and 0/0 is NaN); such temperatures draw as
# this one does, which is already argmax for any gap between two float32 logits.
SMALLEST_TEMPERATURE = torch.finfo(torch.float32).tiny


class TokenBytes(Protocol):
    """The part of the tokenizer contract the streaming decoder needs."""

    def token_bytes(self, token_id: int) -> bytes: ...


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Finite logits divided by `temperature` (> 0), in float32 so bf16 models sample the same way.

    Never inf or NaN, whatever the temperature: where the plain quotient overflows (a temperature near 0),
    the row is first shifted so that its largest value is 0, which leaves the softmax as it is. Ordinary
    temperatures keep the plain quotient, so their draws stay exactly what they always were.
    """
    if not temperature > 0:
        raise ValueError("temperature must be > 0 here; 0 means greedy, see sample_next_token")
    logits = logits.float()
    scaled = logits / temperature
    shifted = logits - logits.max(dim=-1, keepdim=True).values
    safe = shifted / max(temperature, SMALLEST_TEMPERATURE)
    overflowed = ~torch.isfinite(scaled).all(dim=-1, keepdim=True)
    return torch.where(overflowed, safe, scaled)


def top_p_mask(logits: torch.Tensor, top_p: Optional[float]) -> torch.Tensor:
    """Logits outside the nucleus set to -inf: the smallest set of most likely tokens whose mass reaches `top_p`.

    The most likely token is always kept, so the result can always be sampled.
    """
    if top_p is None or top_p >= 1.0:
        return logits
    sorted_logits, sorted_indices = torch.sort(logits, descending=True, dim=-1)
    sorted_probabilities = torch.softmax(sorted_logits.float(), dim=-1)
    mass_before = torch.cumsum(sorted_probabilities, dim=-1) - sorted_probabilities
    drop_sorted = mass_before >= top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, sorted_indices, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next_token(
    logits: torch.Tensor,
    *,
    temperature: float,
    top_k: Optional[int],
    top_p: Optional[float],
    generator: Optional[torch.Generator] = None,
) -> int:
    """One token id from a 1-D row of logits: argmax when temperature is 0, else a draw from the masked softmax.

    Top-k (when set) first narrows the draw to its k candidates, chosen on the logits themselves so that a huge
    temperature draws uniformly among them; top-p, the softmax and the draw then run on k values instead of the
    whole vocabulary. A tiny temperature draws like argmax. Logits that are NaN, +inf or all -inf are a
    UserError, not a draw.
    """
    _check_logits(logits)
    if temperature == 0:
        return int(torch.argmax(logits))
    if top_k is not None and top_k < logits.size(-1):
        candidate_logits, candidate_ids = torch.topk(logits.float(), top_k)
    else:
        candidate_logits, candidate_ids = logits, None
    scaled = apply_temperature(candidate_logits, temperature)
    probabilities = torch.softmax(top_p_mask(scaled, top_p), dim=-1)
    choice = int(torch.multinomial(probabilities, 1, generator=generator))
    return choice if candidate_ids is None else int(candidate_ids[choice])


def _check_logits(logits: torch.Tensor) -> None:
    """Scores with a NaN, a +inf or nothing above -inf come from broken weights or an overflow.

    One reduction finds all three: the row's max is NaN, +inf or -inf exactly then.
    """
    if not bool(torch.isfinite(logits.max())):
        raise UserError(
            "the model's next-token scores are NaN or infinite (diverged weights, or float16 overflow): "
            "use an earlier checkpoint, or `--set system.dtype=float32`"
        )


def stream_tokens(
    model: GPT,
    prompt_ids: Sequence[int],
    *,
    max_new_tokens: int,
    temperature: float,
    vocab_size: int,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    eot_id: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    on_window_slide: Optional[Callable[[int], None]] = None,
) -> Iterator[int]:
    """Yield up to `max_new_tokens` sampled ids after `prompt_ids`, one at a time; stop at `eot_id`.

    The model sees at most its `block_size` most recent tokens: a longer prompt keeps its tail, and when
    the cache fills up it is rebuilt from the last `SLIDE_KEEP_FRACTION` of the window.
    `on_window_slide(dropped_tokens)` is called the first time tokens fall out of the context.
    Only ids below `vocab_size` (the tokenizer's size) are ever drawn: a model's vocabulary is often padded past
    its tokenizer's (50304 over GPT-2's 50257) and the padding ids decode to nothing.
    Inference mode is on only while the model runs, never while the caller holds the iterator.
    """
    if not prompt_ids:
        raise ValueError("the prompt is empty: give at least one token")
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be the tokenizer's size (> 0), got {vocab_size}")
    block_size = model.config.block_size
    keep = max(1, int(block_size * SLIDE_KEEP_FRACTION))
    context = list(prompt_ids)
    slid = False
    if len(context) > block_size:
        if on_window_slide is not None:
            on_window_slide(len(context) - block_size)
        slid = True
        context = context[-block_size:]
    # A cache as long as this reply can grow, not block_size: allocating it is part of the first token's wait.
    cache = BatchedKVCache(model, slots=1, max_length=min(block_size, len(context) + max_new_tokens))
    decoding = DecodingModel(model)  # each token through the lean step (the same logits as the model's forward)
    logits = prefill_slot(model, cache, 0, context)
    for produced in range(1, max_new_tokens + 1):
        token = sample_next_token(
            logits[:vocab_size], temperature=temperature, top_k=top_k, top_p=top_p, generator=generator
        )
        if token == eot_id:
            return
        yield token
        if produced == max_new_tokens:
            return
        context.append(token)
        if cache.lengths[0] < cache.max_length:
            logits = decode_step(decoding, cache, {0: token})[0]
            continue
        if not slid and on_window_slide is not None:
            on_window_slide(len(context) - keep)
        slid = True
        context = context[-keep:]
        logits = prefill_slot(model, cache, 0, context)


class StreamingDecoder:
    """Turns token ids into text pieces as they arrive, holding back a partial multi-byte character.

    The pieces of a sequence joined together equal the tokenizer's `decode` of it
    (invalid bytes become U+FFFD in both).
    """

    def __init__(self, tokenizer: TokenBytes) -> None:
        self._tokenizer = tokenizer
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """The text that `token_id` completes; empty while a character is still incomplete."""
        return self._decoder.decode(self._tokenizer.token_bytes(token_id))

    def flush(self) -> str:
        """Whatever is left at the end (a replacement character for a truncated one)."""
        return self._decoder.decode(b"", final=True)


def stream_text(tokenizer: TokenBytes, token_ids: Iterator[int]) -> Iterator[str]:
    """Text pieces for a stream of token ids, each non-empty, ending with the decoder's remainder."""
    decoder = StreamingDecoder(tokenizer)
    for token_id in token_ids:
        piece = decoder.push(token_id)
        if piece:
            yield piece
    tail = decoder.flush()
    if tail:
        yield tail


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
