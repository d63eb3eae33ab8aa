"""Decoding speed of `hellogpt.generate.stream_tokens` against transformers' `GPT2LMHeadModel.generate`.

A GPT-2-124M-shaped model (12x768, vocabulary 50257, block 1024, biases) with random weights,
copied into transformers' GPT-2 so both run the same weights; greedy decoding of N tokens after
a 16-token prompt, fp32 and bf16, medians over repeats, all in one process.

Runs alternate between the two engines so that a busy CPU slows both alike. OpenMP threads sleep
instead of spinning while they wait (OMP_WAIT_POLICY=PASSIVE unless set): on a CPU shared with
other work, spinning threads made decoding 10-20x slower for both.

    python benchmarks/generate.py [--quick] [--threads N] [--tokens N] [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass

# Read by OpenMP when torch loads, so it must be set before the imports below.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from hellogpt.generate import prepare_for_inference, stream_tokens  # noqa: E402
from hellogpt.model.gpt import GPT, GPTConfig  # noqa: E402

PROMPT_LENGTH = 16
# Reading every weight once per token bounds decoding speed; this is the memory bandwidth the issue assumes.
MEMORY_BANDWIDTH_BYTES_PER_SECOND = 50e9
GPT2_SMALL = GPTConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257, dropout=0.0, bias=True)


@dataclass
class Timing:
    seconds_to_first_token: float
    decode_tokens_per_second: float
    tokens: list[int]


def copy_into_transformers(model: GPT):
    """A transformers GPT2LMHeadModel holding `model`'s weights (Conv1D stores Linear weights transposed)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = model.config
    hf_config = GPT2Config(
        vocab_size=config.vocab_size, n_positions=config.block_size, n_embd=config.n_embd,
        n_layer=config.n_layer, n_head=config.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    hf_model = GPT2LMHeadModel(hf_config)
    transposed = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    hf_state = hf_model.state_dict()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name == "lm_head.weight":
                continue  # tied to wte in both
            value = tensor.t() if name.endswith(transposed) else tensor
            hf_state[name].copy_(value)
    return hf_model.eval()


def time_ours(model: GPT, prompt: list[int], new_tokens: int) -> Timing:
    start = time.perf_counter()
    tokens: list[int] = []
    first = 0.0
    vocab_size = model.config.vocab_size  # GPT-2's own 50257: no padding ids to leave out
    for token in stream_tokens(model, prompt, max_new_tokens=new_tokens, temperature=0.0, vocab_size=vocab_size):
        if not tokens:
            first = time.perf_counter()
        tokens.append(token)
    end = time.perf_counter()
    return Timing(first - start, (len(tokens) - 1) / (end - first), tokens)


def time_transformers(hf_model, prompt: list[int], new_tokens: int) -> Timing:
    from transformers.generation.streamers import BaseStreamer

    class FirstTokenClock(BaseStreamer):
        def __init__(self) -> None:
            self.calls = 0
            self.first = 0.0

        def put(self, value) -> None:
            self.calls += 1
            if self.calls == 2:  # the first call carries the prompt
                self.first = time.perf_counter()

        def end(self) -> None:
            pass

    clock = FirstTokenClock()
    ids = torch.tensor([prompt])
    start = time.perf_counter()
    with torch.inference_mode():
        output = hf_model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
            do_sample=False, use_cache=True, streamer=clock, pad_token_id=0,
        )
    end = time.perf_counter()
    tokens = output[0, len(prompt):].tolist()
    return Timing(clock.first - start, (len(tokens) - 1) / (end - clock.first), tokens)


def alternating_medians(runs: list, repeats: int) -> list[Timing]:
    """Each run `repeats` times, taking turns, reduced to medians."""
    timings: list[list[Timing]] = [[] for _ in runs]
    for _ in range(repeats):
        for run, collected in zip(runs, timings):
            collected.append(run())
    return [median_timing(collected) for collected in timings]


def median_timing(timings: list[Timing]) -> Timing:
    return Timing(
        statistics.median(t.seconds_to_first_token for t in timings),
        statistics.median(t.decode_tokens_per_second for t in timings),
        timings[-1].tokens,
    )


def weight_bytes_per_token(model: GPT) -> int:
    """Bytes read per decoded token: every weight once (position embeddings: one row, ignored)."""
    return sum(p.numel() * p.element_size() for name, p in model.named_parameters() if "wpe" not in name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 tokens, 1 repeat: checks that it runs")
    parser.add_argument("--tokens", type=int, default=None, help="tokens to decode (default 200)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per row, median reported (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    args = parser.parse_args()
    new_tokens = args.tokens or (50 if args.quick else 200)
    repeats = args.repeats or (1 if args.quick else 3)
    if args.threads:
        torch.set_num_threads(args.threads)

    import transformers
    from rich.console import Console
    from rich.table import Table

    torch.manual_seed(0)
    reference = GPT(GPT2_SMALL).eval()
    prompt = torch.randint(0, GPT2_SMALL.vocab_size, (PROMPT_LENGTH,)).tolist()
    table = Table(title=f"Greedy decoding, {new_tokens} tokens after {PROMPT_LENGTH}, {torch.get_num_threads()} threads, "
                  f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
                  f"median of {repeats} (torch {torch.__version__}, transformers {transformers.__version__})")
    for column in ("dtype", "engine", "first token (ms)", "decode tok/s", "vs transformers", "of memory bound", "same tokens"):
        table.add_column(column, justify="right")
    best = {"transformers": 0.0, "hellogpt": 0.0}
    for dtype_name in args.dtypes.split(","):
        dtype = getattr(torch, dtype_name)
        ours = prepare_for_inference(GPT(GPT2_SMALL), torch.device("cpu"), torch.float32)
        ours.load_state_dict(reference.state_dict())
        hf_model = copy_into_transformers(ours).to(dtype)
        ours = prepare_for_inference(ours, torch.device("cpu"), dtype)
        bound = MEMORY_BANDWIDTH_BYTES_PER_SECOND / weight_bytes_per_token(ours)
        # Warm-up over the full length: transformers pays a one-off cost for each new sequence length.
        time_ours(ours, prompt, new_tokens), time_transformers(hf_model, prompt, new_tokens)
        theirs, mine = alternating_medians(
            [lambda: time_transformers(hf_model, prompt, new_tokens), lambda: time_ours(ours, prompt, new_tokens)], repeats
        )
        same = sum(a == b for a, b in zip(mine.tokens, theirs.tokens))
        for name, timing in (("transformers", theirs), ("hellogpt", mine)):
            best[name] = max(best[name], timing.decode_tokens_per_second)
            table.add_row(
                dtype_name, name, f"{timing.seconds_to_first_token * 1000:.0f}", f"{timing.decode_tokens_per_second:.1f}",
                f"{timing.decode_tokens_per_second / theirs.decode_tokens_per_second:.2f}x",
                f"{timing.decode_tokens_per_second / bound:.0%}", "" if name == "transformers" else f"{same}/{len(theirs.tokens)}",
            )
    Console(width=max(Console().width, 120)).print(table)
    print(f"memory bound: {MEMORY_BANDWIDTH_BYTES_PER_SECOND / 1e9:.0f} GB/s / weight bytes per token")
    print(f"fastest dtype each: hellogpt {best['hellogpt']:.1f} tok/s, transformers {best['transformers']:.1f} tok/s, "
          f"ratio {best['hellogpt'] / best['transformers']:.2f}x")


if __name__ == "__main__":
    main()
