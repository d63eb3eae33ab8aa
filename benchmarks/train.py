"""Training-step speed of hellogpt against transformers' `GPT2LMHeadModel` with a plain AdamW loop.

Two shapes: (a) a char model, 4 layers x 128 wide, 4 heads, block 64, batch 12, vocabulary 65;
(b) the `edgar_poe` model, 12 layers x 384 wide, 12 heads, block 256, batch 4, vocabulary 50304, no bias.
Ours trains the way `hellogpt train` does (AdamW with decay on matrices only, autocast per
`choose_dtype("auto")`, gradient clipping); the reference is `GPT2LMHeadModel` from `GPT2Config`
holding the same initial weights, `torch.optim.AdamW` over all parameters, fp32, the same clipping.
Both see the same batches (tiny Shakespeare, Poe's works shipped with the package); steps alternate between the
two so that a busy CPU slows both alike. Reported: median ms/step after warm-up, tokens/s, MFU
against the measured peak of each one's dtype, the loss after the first and the last step, and
ours/reference tokens/s.

OpenMP threads sleep instead of spinning while they wait (OMP_WAIT_POLICY=PASSIVE unless set): on a
CPU shared with other work, spinning threads made every step 20x slower for both implementations.

With --loop it times the real training loop instead (`hellogpt.train.loop.train`, case (a), fp32): ms/step between
its StepEvents with the loss and gradient norm read every step (log_interval 1) and once per 10 steps, interleaved.
On a CPU the two should match (reading a CPU tensor costs nothing); on a GPU the second skips 9 of 10 queue stalls.

    python benchmarks/train.py [--quick] [--steps N] [--warmup N] [--cases char,poe] [--threads N] [--dtype D] [--loop]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

# Read by OpenMP when torch loads, so it must be set before the imports below.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from hellogpt.config.schema import OptimConfig  # noqa: E402
from hellogpt.data.sources import CORPORA_DIR  # noqa: E402
from hellogpt.hardware.devices import autocast_context, choose_device, choose_dtype  # noqa: E402
from hellogpt.hardware.probes.peak import mfu, peak_flops  # noqa: E402
from hellogpt.model.gpt import GPT, GPTConfig  # noqa: E402
from hellogpt.train.optimizer import build_optimizer  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
GRAD_CLIP = 1.0
SEED = 1337
# Enough of Poe's text for thousands of distinct 256-token windows, without tokenizing all 2.4 MB.
POE_TEXT_CHARS = 600_000
TABLE_WIDTH = 150


@dataclass(frozen=True)
class Case:
    name: str
    config: GPTConfig
    batch_size: int
    learning_rate: float
    corpus: str  # "char" = tinyshakespeare by character, "gpt2" = Edgar Allan Poe with GPT-2's BPE


CASES = {
    "char": Case("(a) char 4x128", GPTConfig(4, 4, 128, 64, 65, dropout=0.0, bias=False, arch="gpt2"), 12, 1e-3, "char"),
    "poe": Case("(b) edgar_poe 12x384", GPTConfig(12, 12, 384, 256, 50304, dropout=0.0, bias=False, arch="gpt2"), 4, 5e-4, "gpt2"),
}


@dataclass
class Result:
    label: str
    dtype: torch.dtype
    step_seconds: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)


def load_tokens(case: Case) -> np.ndarray:
    """The token stream batches are cut from: tiny Shakespeare by character, or Poe's works in GPT-2 BPE."""
    if case.corpus == "char":
        text = shakespeare_path().read_text(encoding="utf-8")
        chars = sorted(set(text))[: case.config.vocab_size]
        index = {char: position for position, char in enumerate(chars)}
        return np.array([index.get(char, 0) for char in text], dtype=np.int64)
    from hellogpt.data.tokenizer import gpt2_tokenizer

    text = "".join(path.read_text(encoding="utf-8") for path in sorted((CORPORA_DIR / "edgar_poe").glob("*.txt")))
    return np.array(gpt2_tokenizer().encode(text[:POE_TEXT_CHARS]), dtype=np.int64)


def shakespeare_path() -> Path:
    """The whole tiny Shakespeare when ../shared/data is beside the repository, else the tests' 100 KB slice of it."""
    whole = REPO_ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
    return whole if whole.is_file() else REPO_ROOT / "tests" / "fixtures" / "tinyshakespeare.txt"


def make_batches(tokens: np.ndarray, case: Case, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    rng = np.random.default_rng(SEED)
    block = case.config.block_size
    batches = []
    for _ in range(count):
        starts = rng.integers(0, len(tokens) - block - 1, case.batch_size)
        x = np.stack([tokens[start : start + block] for start in starts])
        y = np.stack([tokens[start + 1 : start + block + 1] for start in starts])
        batches.append((torch.from_numpy(x), torch.from_numpy(y)))
    return batches


def copy_into_transformers(model: GPT):
    """GPT2LMHeadModel with `model`'s weights (Conv1D weights transposed; zero biases where ours has none)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = model.config
    hf_config = GPT2Config(
        vocab_size=config.vocab_size, n_positions=config.block_size, n_embd=config.n_embd, n_layer=config.n_layer,
        n_head=config.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None,
    )
    hf_model = GPT2LMHeadModel(hf_config)
    transposed = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    ours = model.state_dict()
    with torch.no_grad():
        for name, tensor in hf_model.state_dict().items():
            if name in ours:
                tensor.copy_(ours[name].t() if name.endswith(transposed) else ours[name])
            elif name.endswith(".bias"):
                tensor.zero_()
    return hf_model.train()


def our_step(model: GPT, case: Case, device: torch.device, dtype: torch.dtype) -> Callable:
    """One optimizer step as `hellogpt train` takes it (one micro-batch)."""
    optimizer = build_optimizer(model, OptimConfig(learning_rate=case.learning_rate), device)

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        with autocast_context(device, dtype):
            _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def reference_step(hf_model, case: Case) -> Callable:
    """The plain loop: fp32, AdamW over every parameter with the same hyper-parameters."""
    defaults = OptimConfig(learning_rate=case.learning_rate)
    optimizer = torch.optim.AdamW(
        hf_model.parameters(), lr=defaults.learning_rate, betas=(defaults.beta1, defaults.beta2),
        weight_decay=defaults.weight_decay,
    )

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        logits = hf_model(input_ids=x).logits
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf_model.parameters(), GRAD_CLIP)
        optimizer.step()
        optimizer.zero_grad()
        return loss.item()

    return step


def run_case(case: Case, steps: int, warmup: int, ours_dtype_setting: str) -> tuple[Result, Result, float]:
    device = choose_device("cpu")
    torch.manual_seed(SEED)
    model = GPT(case.config)
    hf_model = copy_into_transformers(model)
    dtype = choose_dtype(ours_dtype_setting, device, case.config)
    ours = Result("hellogpt", dtype)
    reference = Result("transformers GPT2LMHeadModel", torch.float32)
    ours_step, reference_step_fn = our_step(model, case, device, dtype), reference_step(hf_model, case)
    batches = make_batches(load_tokens(case), case, warmup + steps)
    for index, (x, y) in enumerate(batches):
        for result, step in ((ours, ours_step), (reference, reference_step_fn)):
            start = time.perf_counter()
            loss = step(x, y)
            elapsed = time.perf_counter() - start
            result.losses.append(loss)
            if index >= warmup:
                result.step_seconds.append(elapsed)
    return ours, reference, model.flops_per_token(case.config.block_size)


def measured_peak(dtype: torch.dtype) -> float:
    """The CPU's measured matmul peak in `dtype` (the MFU column needs it, so this benchmark always measures)."""
    peak = peak_flops(torch.device("cpu"), dtype)
    if peak is None:
        raise SystemExit("the MFU column needs the measured peak: unset HELLOGPT_MEASURE (it is 'off')")
    return peak


def summarise(case: Case, result: Result, flops_per_token: float) -> dict[str, float]:
    median = statistics.median(result.step_seconds)
    tokens_per_second = case.batch_size * case.config.block_size / median
    peak = measured_peak(result.dtype)
    spread = (max(result.step_seconds) - min(result.step_seconds)) / median
    return {
        "ms": median * 1000,
        "spread": spread,
        "tokens_per_second": tokens_per_second,
        "mfu": mfu(flops_per_token, tokens_per_second, peak),
        "first_loss": result.losses[0],
        "last_loss": result.losses[-1],
    }


def print_table(rows: list[tuple[Case, Result, dict[str, float], Optional[float]]], steps: int, warmup: int) -> None:
    from rich.console import Console
    from rich.table import Table

    title = f"Training step on CPU ({torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}), "
    table = Table(title=title + f"median of {steps} after {warmup} warm-up")
    for column in ("model", "implementation", "dtype", "ms/step (spread)", "tokens/s", "MFU", "loss first -> last", "speed vs ref"):
        table.add_column(column, justify="left" if column in ("model", "implementation", "dtype") else "right")
    for case, result, summary, ratio in rows:
        table.add_row(
            case.name,
            result.label,
            str(result.dtype).removeprefix("torch."),
            f"{summary['ms']:.1f} (±{summary['spread'] * 50:.0f}%)",
            f"{summary['tokens_per_second']:,.0f}",
            f"{summary['mfu'] * 100:.1f}%",
            f"{summary['first_loss']:.3f} -> {summary['last_loss']:.3f}",
            f"{ratio:.2f}x" if ratio is not None else "1.00x",
        )
    console = Console(width=TABLE_WIDTH)
    console.print(table)
    console.print(
        f"[dim]MFU = model FLOPs (6N + 12·L·H·Q·T per token) / measured matmul peak of that dtype "
        f"(float32 {measured_peak(torch.float32) / 1e12:.3g} TFLOP/s, "
        f"bfloat16 {measured_peak(torch.bfloat16) / 1e12:.3g} TFLOP/s). ln(vocab): "
        + ", ".join(f"{case.name} {math.log(case.config.vocab_size):.3f}" for case, *_ in rows[::2])
        + "[/]"
    )


def loop_milliseconds_per_step(data_dir: Path, work_dir: Path, steps: int, log_interval: int) -> float:
    """The real loop on case (a): mean ms/step between the StepEvents at steps 2*log_interval and `steps`."""
    from hellogpt.config.layers import resolve_config
    from hellogpt.train.events import StepEvent
    from hellogpt.train.loop import train

    config = CASES["char"].config
    settings = [
        f"model.n_layer={config.n_layer}", f"model.n_head={config.n_head}", f"model.n_embd={config.n_embd}",
        f"model.block_size={config.block_size}", "model.dropout=0.0", "model.bias=false",
        f"train.batch_size={CASES['char'].batch_size}", "train.gradient_accumulation_steps=1", f"train.max_iters={steps}",
        f"train.eval_interval={steps}", "train.eval_iters=1", f"train.log_interval={log_interval}",
        f"train.runs_dir={work_dir / 'runs'}", "system.device=cpu", "system.dtype=float32", "system.compile=false",
        "system.peak_flops=1e12", "sample.max_new_tokens=1",
    ]
    stamps: dict[int, float] = {}
    for event in train(resolve_config(None, [], settings), data_dir=data_dir, checkpoint_path=work_dir / "loop.pt"):
        if isinstance(event, StepEvent):
            stamps[event.step] = time.perf_counter()
    first = 2 * log_interval
    return (stamps[steps] - stamps[first]) / (steps - first) * 1000


def run_loop_benchmark(steps: int, repeats: int) -> None:
    """Log interval 1 vs 10 in the real loop, interleaved `repeats` times; medians and their ratio."""
    import json
    import tempfile

    from rich.console import Console

    text = shakespeare_path().read_text(encoding="utf-8")
    chars = "".join(sorted(set(text)))
    index = {char: position for position, char in enumerate(chars)}
    ids = np.array([index[char] for char in text], dtype=np.uint16)
    timings: dict[int, list[float]] = {1: [], 10: []}
    with tempfile.TemporaryDirectory() as temporary:
        data_dir = Path(temporary) / "data"
        data_dir.mkdir()
        split = int(len(ids) * 0.9)
        ids[:split].tofile(data_dir / "train.bin")
        ids[split:].tofile(data_dir / "val.bin")
        meta = {"tokenizer": {"kind": "char", "chars": chars}, "vocab_size": len(chars), "dtype": "uint16"}
        (data_dir / "meta.json").write_text(json.dumps(meta))
        for _ in range(repeats):
            for log_interval in timings:
                timings[log_interval].append(loop_milliseconds_per_step(data_dir, Path(temporary), steps, log_interval))
    every, tenth = (statistics.median(timings[interval]) for interval in (1, 10))
    Console(width=TABLE_WIDTH).print(
        f"training loop, {CASES['char'].name}, fp32, {steps} steps x {repeats}: read every step {every:.1f} ms/step, "
        f"read every 10th step {tenth:.1f} ms/step (ratio {every / tenth:.2f}x); runs: {timings}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Few steps: checks that it runs; numbers are rough.")
    parser.add_argument("--steps", type=int, default=None, help="Timed steps per implementation.")
    parser.add_argument("--warmup", type=int, default=3, help="Untimed steps first (oneDNN picks kernels then).")
    parser.add_argument("--cases", default="char,poe", help="Comma-separated: char, poe.")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice).")
    parser.add_argument("--dtype", default="auto", help="Our system.dtype (the reference is always float32).")
    parser.add_argument("--loop", action="store_true", help="Time the real training loop: log_interval 1 vs 10.")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.loop:
        run_loop_benchmark(args.steps or (40 if args.quick else 120), repeats=2 if args.quick else 5)
        return
    steps = args.steps or (6 if args.quick else 20)
    rows = []
    for name in args.cases.split(","):
        case = CASES[name.strip()]
        ours, reference, flops_per_token = run_case(case, steps, args.warmup, args.dtype)
        ours_summary, reference_summary = summarise(case, ours, flops_per_token), summarise(case, reference, flops_per_token)
        ratio = ours_summary["tokens_per_second"] / reference_summary["tokens_per_second"]
        rows += [(case, ours, ours_summary, ratio), (case, reference, reference_summary, None)]
    print_table(rows, steps, args.warmup)


if __name__ == "__main__":
    main()
