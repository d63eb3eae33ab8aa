"""Peak memory and time of `load_pretrained` (tensor-by-tensor conversion) against a naive conversion.

A random GPT-2 of a real size (gpt2-medium's 24x1024 shape; --quick: gpt2's 12x768) is saved with
`save_pretrained` into a temporary folder; each way of loading it runs in a fresh process whose peak
resident memory above its after-import baseline is reported in multiples of the fp32 weight size.
The naive reference is what a straightforward port does: transformers' model, our model built with
its random init, and a full converted state dict, all alive at once.

    python benchmarks/hf_convert.py [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SHAPES = {"gpt2-medium": (24, 16, 1024), "gpt2": (12, 12, 768)}

MEASURE = r"""
import gc, json, resource, sys, time
import torch
import transformers
from transformers import GPT2LMHeadModel
from hellogpt.model.gpt import GPT, GPTConfig
from hellogpt.model.hf import load_pretrained, CONV1D_WEIGHT_SUFFIXES

def rss_bytes():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()

def naive(path):
    hf_model = GPT2LMHeadModel.from_pretrained(path)
    c = hf_model.config
    model = GPT(GPTConfig(c.n_layer, c.n_head, c.n_embd, c.n_positions, c.vocab_size, 0.0, True, arch="gpt2"))
    state = {name: (t.t().contiguous() if name.endswith(CONV1D_WEIGHT_SUFFIXES) else t.clone())
             for name, t in hf_model.state_dict().items() if not name.endswith((".attn.bias", ".attn.masked_bias"))}
    model.load_state_dict(state, strict=False)
    return model

path, way = sys.argv[1], sys.argv[2]
gc.collect()
baseline = rss_bytes()
start = time.perf_counter()
model = load_pretrained(path)[0] if way == "load_pretrained" else naive(path)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
weights = sum(p.numel() * p.element_size() for p in model.parameters())
print(json.dumps({"seconds": seconds, "peak_extra": peak - baseline, "weights": weights}))
"""


def save_random_model(directory: Path, shape: tuple[int, int, int]) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    n_layer, n_head, n_embd = shape
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd)).save_pretrained(directory)


def measure(directory: Path, way: str) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, str(directory), way], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="gpt2's shape instead of gpt2-medium's, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    name = "gpt2" if args.quick else "gpt2-medium"
    repeats = 1 if args.quick else args.repeats
    with tempfile.TemporaryDirectory() as temp:
        directory = Path(temp) / name
        save_random_model(directory, SHAPES[name])
        rows = {}
        for way in ("naive", "load_pretrained"):
            runs = [measure(directory, way) for _ in range(repeats)]
            rows[way] = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    weights_gb = rows["load_pretrained"]["weights"] / 1e9
    print(f"\nRandom {name}-shaped GPT-2, {weights_gb:.2f} GB of fp32 weights, median of {repeats} run(s)\n")
    print("| conversion | peak extra RSS (GB) | x weights | seconds |")
    print("|---|---|---|---|")
    for way, row in rows.items():
        print(f"| {way} | {row['peak_extra'] / 1e9:.2f} | {row['peak_extra'] / row['weights']:.2f} | {row['seconds']:.2f} |")
    ratio = rows["naive"]["peak_extra"] / rows["load_pretrained"]["peak_extra"]
    print(f"\nload_pretrained needs {ratio:.2f}x less peak memory than the naive conversion")


if __name__ == "__main__":
    main()
