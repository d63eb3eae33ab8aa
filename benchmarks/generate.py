"""Decoding speed of `hellogpt.decode.stream.stream_tokens` against transformers' `GPT2LMHeadModel.generate`.

GPT-2-124M and gpt2-medium shapes (vocabulary 50257, block 1024, biases) with random weights,
copied into transformers' GPT-2 so both run the same weights; greedy decoding of N tokens after
a 16-token prompt, fp32, bf16 and hellogpt's int8 weights, medians over repeats, all in one process.
The memory bound is this machine's read bandwidth (the faster of a `sum` and a matrix-vector product over
1 GiB, the read decoding does, measured between the runs) over the weight bytes read per token; "same
tokens" compares with hellogpt's fp32 tokens.

Runs alternate between the two engines so that a busy CPU slows both alike. OpenMP runs as the user's
environment says, as `chat` does: unset (libgomp spins a little before it sleeps) is the fast setting on
an idle machine; with OMP_WAIT_POLICY=PASSIVE threads sleep at once, which a shared, busy CPU needs but
which costs a decoding step a wake-up per operation (GPT-2-124M fp32 here: 38 tok/s against 52 unset).

    python benchmarks/generate.py [--quick] [--threads N] [--tokens N] [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass

import torch

from hellogpt.decode.stream import stream_tokens
from hellogpt.generate import prepare_for_inference, prepare_int8_for_inference
from hellogpt.hardware.readings import describe_cpu
from hellogpt.model.gpt import GPT, GPTConfig  # noqa: E402

PROMPT_LENGTH = 16
# Bytes summed to read the machine's bandwidth: far more than any cache holds.
BANDWIDTH_PROBE_COLUMNS = 4096
BANDWIDTH_PROBE_BYTES = 2**30
SHAPES = {
    "gpt2": GPTConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257, dropout=0.0, bias=True, arch="gpt2"),
    "gpt2-medium": GPTConfig(n_layer=24, n_head=16, n_embd=1024, block_size=1024, vocab_size=50257, dropout=0.0, bias=True, arch="gpt2"),
}


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
    """Bytes read per decoded token: every matrix once (the embeddings' one row each is ignored, and an int8
    model's fp32 token embedding is only looked up, its int8 copy is what the LM head reads)."""
    tensors = {id(t): t for name, t in [*model.named_parameters(), *model.named_buffers()]
               if "wpe" not in name and "scales" not in name and not name.startswith("transformer.wte")}
    if "lm_head.weight" not in dict(model.named_buffers()):
        tensors[id(model.lm_head.weight)] = model.lm_head.weight  # tied to wte: read once, by the LM head
    return sum(t.numel() * t.element_size() for t in tensors.values())


def read_bandwidth(data: torch.Tensor) -> float:
    """Bytes per second of the faster of one `sum` over `data` and one matrix-vector product with it as the
    matrix (both read every byte once; kernels differ in how close they come to the memory's rate)."""
    matrix = data.view(-1, BANDWIDTH_PROBE_COLUMNS)
    vector = torch.ones(BANDWIDTH_PROBE_COLUMNS, dtype=data.dtype)
    seconds = []
    for read in (data.sum, lambda: torch.mv(matrix, vector)):
        start = time.perf_counter()
        read()
        seconds.append(time.perf_counter() - start)
    return data.numel() * data.element_size() / min(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 tokens, 1 repeat, gpt2 shape only: checks that it runs")
    parser.add_argument("--tokens", type=int, default=None, help="tokens to decode (default 200)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per row, median reported (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--shapes", default=None, help="comma-separated of: " + ", ".join(SHAPES) + " (default: all)")
    parser.add_argument("--dtypes", default="float32,bfloat16,int8")
    args = parser.parse_args()
    new_tokens = args.tokens or (50 if args.quick else 200)
    repeats = args.repeats or (1 if args.quick else 3)
    shapes = (args.shapes or ("gpt2" if args.quick else ",".join(SHAPES))).split(",")
    if args.threads:
        torch.set_num_threads(args.threads)

    import transformers
    from rich.console import Console
    from rich.table import Table

    print(f"CPU: {describe_cpu()}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    probe = torch.ones(BANDWIDTH_PROBE_BYTES // 4)
    bandwidths: list[float] = []
    table = Table(title=f"Greedy decoding, {new_tokens} tokens after {PROMPT_LENGTH}, {torch.get_num_threads()} threads, "
                  f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
                  f"median of {repeats} (torch {torch.__version__}, transformers {transformers.__version__})")
    for column in ("shape", "dtype", "engine", "first token (ms)", "decode tok/s", "vs transformers", "vs hellogpt fp32",
                   "of memory bound", "same tokens"):
        table.add_column(column, justify="right")
    for shape in shapes:
        config = SHAPES[shape]
        torch.manual_seed(0)
        reference = GPT(config).eval()
        prompt = torch.randint(0, config.vocab_size, (PROMPT_LENGTH,)).tolist()
        best = {"transformers": 0.0, "hellogpt": 0.0}
        rows = []
        for dtype_name in args.dtypes.split(","):
            ours = prepare_for_inference(GPT(config), torch.device("cpu"), torch.float32)
            ours.load_state_dict(reference.state_dict())
            hf_model = None
            if dtype_name == "int8":
                ours = prepare_int8_for_inference(ours, torch.device("cpu"))
            else:
                dtype = getattr(torch, dtype_name)
                hf_model = copy_into_transformers(ours).to(dtype)
                ours = prepare_for_inference(ours, torch.device("cpu"), dtype)
            weight_bytes = weight_bytes_per_token(ours)
            runs = [lambda: time_ours(ours, prompt, new_tokens)]
            if hf_model is not None:
                runs.insert(0, lambda: time_transformers(hf_model, prompt, new_tokens))
            for run in runs:  # warm-up over the full length: transformers pays once for each new sequence length
                run()
            read_rates: list[float] = []

            def timed_then_read(run):
                """Each engine's run followed by a bandwidth reading: both see the same (shared) machine."""
                return lambda: (run(), read_rates.append(read_bandwidth(probe)))[0]

            timings = alternating_medians([timed_then_read(run) for run in runs], repeats)
            bandwidth = statistics.median(read_rates)
            bandwidths.append(bandwidth)
            engines = [("transformers", timings[0]), ("hellogpt", timings[1])] if hf_model is not None else [("hellogpt", timings[0])]
            for name, timing in engines:
                best[name] = max(best[name], timing.decode_tokens_per_second)
                rows.append((dtype_name, name, timing, bandwidth / weight_bytes, engines[0][1] if hf_model else None))
        fp32_ours = next(t for d, n, t, _, _ in rows if d == "float32" and n == "hellogpt")
        for dtype_name, name, timing, bound, theirs in rows:
            same = sum(a == b for a, b in zip(timing.tokens, fp32_ours.tokens))
            table.add_row(
                shape, dtype_name, name, f"{timing.seconds_to_first_token * 1000:.0f}", f"{timing.decode_tokens_per_second:.1f}",
                f"{timing.decode_tokens_per_second / theirs.decode_tokens_per_second:.2f}x" if theirs else "",
                f"{timing.decode_tokens_per_second / fp32_ours.decode_tokens_per_second:.2f}x",
                f"{timing.decode_tokens_per_second / bound:.0%}", f"{same}/{len(fp32_ours.tokens)}",
            )
        print(f"{shape}: fastest dtype each: hellogpt {best['hellogpt']:.1f} tok/s, transformers "
              f"{best['transformers']:.1f} tok/s, ratio {best['hellogpt'] / best['transformers']:.2f}x")
    Console(width=max(Console().width, 140)).print(table)
    print(f"memory bound: read bandwidth measured between the runs (median {statistics.median(bandwidths) / 1e9:.1f} GB/s, "
          f"range {min(bandwidths) / 1e9:.1f}-{max(bandwidths) / 1e9:.1f}) / weight bytes read per token; "
          f"load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
