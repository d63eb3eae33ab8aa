"""Cost of a training step with optim.name=muon against optim.name=adamw, on the same model and batches.

A char-sized model (vocabulary 65, block 128, batch 8 or --batch, fp32 on the CPU) at 4 x 128 and 6 x 192. Each step
is what `hellogpt train` does in one optimizer step without accumulation: forward, backward, gradient clipping, the
update, zeroing the gradients. Each variant (architecture + optimizer) trains its own model from the same seed:
  gpt2 adamw         model.arch=gpt2 with the fused AdamW of build_optimizer (the reference);
  gpt2 muon          build_optimizer's MuonWithAdamW (Newton-Schulz batched over the matrices of one shape);
  qwen3 adamw/muon   the same on model.arch=qwen3 (no biases);
  gpt2 torch-muon    (--torch-muon) torch.optim.Muon, a Python loop of Newton-Schulz per matrix, beside fused AdamW.
Each round steps every variant once, in a rotating order, so that a busy CPU slows all alike; reported are median ms
per step after warm-up, the median of the update alone, and the median of the per-round ratios of the step to the
same architecture's adamw step (the goal for muon: at most 1.15) and to gpt2 adamw's.

    python benchmarks/optimizer_step.py [--steps N] [--warmup N] [--threads N] [--batch N] [--shapes 4x128,6x192]
                                        [--torch-muon]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from typing import Callable

# Read by OpenMP when torch loads: threads sleep instead of spinning on a shared CPU (see benchmarks/train.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from hellogpt.config.schema import OptimConfig  # noqa: E402
from hellogpt.model.architectures import build_model  # noqa: E402
from hellogpt.model.gpt import GPTConfig  # noqa: E402
from hellogpt.train.optimizer import build_optimizer, hidden_matrix_ids  # noqa: E402

SHAPES = ((4, 128), (6, 192))
VOCABULARY = 65
BLOCK = 128
BATCH = 8
SEED = 1337
GRAD_CLIP = 1.0


class _TorchMuonBeside:
    """torch.optim.Muon on the block matrices and build_optimizer's fused AdamW on the rest, stepped together."""

    def __init__(self, model: nn.Module, optim: OptimConfig) -> None:
        hidden = hidden_matrix_ids(model)
        matrices = [parameter for parameter in model.parameters() if id(parameter) in hidden]
        self.muon = torch.optim.Muon(matrices, lr=optim.muon_learning_rate, momentum=optim.muon_momentum, weight_decay=0.0)
        for parameter in matrices:
            parameter.requires_grad_(False)
        self.adamw = build_optimizer(model, optim.model_copy(update={"name": "adamw"}), torch.device("cpu"))
        for parameter in matrices:
            parameter.requires_grad_(True)

    def step(self) -> None:
        self.adamw.step()
        self.muon.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.adamw.zero_grad(set_to_none=set_to_none)
        self.muon.zero_grad(set_to_none=set_to_none)


def _optimizers(model: nn.Module, name: str) -> object:
    if name == "torch-muon":
        return _TorchMuonBeside(model, OptimConfig(name="muon"))
    return build_optimizer(model, OptimConfig(name=name), torch.device("cpu"))


def _step_timer(n_layer: int, n_embd: int, variant: str) -> Callable[[torch.Tensor, torch.Tensor], tuple[float, float]]:
    arch, name = variant.split()
    torch.manual_seed(SEED)
    config = GPTConfig(
        n_layer=n_layer,
        n_head=n_embd // 32,
        n_embd=n_embd,
        block_size=BLOCK,
        vocab_size=VOCABULARY,
        dropout=0.0,
        bias=arch == "gpt2",
        arch=arch,
    )
    model = build_model(config).train()
    optimizer = _optimizers(model, name)

    def step(inputs: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
        started = time.perf_counter()
        _, loss = model(inputs, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        update_started = time.perf_counter()
        optimizer.step()  # type: ignore[attr-defined]
        optimizer.zero_grad(set_to_none=True)  # type: ignore[attr-defined]
        ended = time.perf_counter()
        return ended - started, ended - update_started

    return step


Timing = tuple[float, float]  # seconds: the whole step, the update alone
REFERENCE = "gpt2 adamw"


def measure(
    n_layer: int, n_embd: int, steps: int, warmup: int, names: tuple[str, ...], batch_size: int = BATCH
) -> list[dict[str, Timing]]:
    """Per timed round, each variant's (step, update) seconds; a round runs every variant once on the same batch,
    in a rotating order."""
    timers = {name: _step_timer(n_layer, n_embd, name) for name in names}
    generator = torch.Generator().manual_seed(SEED)
    rounds: list[dict[str, Timing]] = []
    for index in range(warmup + steps):
        batch = torch.randint(VOCABULARY, (batch_size, BLOCK + 1), generator=generator)
        inputs, targets = batch[:, :-1], batch[:, 1:]
        order = names[index % len(names):] + names[: index % len(names)]
        timings = {name: timers[name](inputs, targets) for name in order}
        if index >= warmup:
            rounds.append(timings)
    return rounds


def paired_ratio(rounds: list[dict[str, Timing]], name: str, reference: str) -> float:
    """The median over rounds of name's step time over reference's in the same round: a load that comes and goes
    slows both sides of a pair alike, where it would shift two separate medians apart."""
    return statistics.median(timings[name][0] / timings[reference][0] for timings in rounds)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="timed rounds per shape")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--batch", type=int, default=BATCH,
                        help="sequences per step (Muon's update costs the same at any batch; the profiles use 32-64)")
    parser.add_argument("--shapes", default=",".join(f"{n}x{w}" for n, w in SHAPES), help="LAYERSxWIDTH,...")
    parser.add_argument("--torch-muon", action="store_true", help="also time torch.optim.Muon (slow: a loop per matrix)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = ("gpt2 adamw", "gpt2 muon", "qwen3 adamw", "qwen3 muon") + (("gpt2 torch-muon",) if args.torch_muon else ())
    print(f"CPU: {_cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"vocabulary {VOCABULARY}, block {BLOCK}, batch {args.batch}, fp32; medians of {args.steps} interleaved rounds")
    print(f"{'shape':<10}{'variant':<17}{'ms/step':>9}{'update ms':>11}{'/ adamw':>9}{'/ gpt2 adamw':>14}")
    shapes = [tuple(int(part) for part in shape.split("x")) for shape in args.shapes.split(",")]
    for n_layer, n_embd in shapes:
        rounds = measure(n_layer, n_embd, args.steps, args.warmup, names, args.batch)
        for name in names:
            step = statistics.median(timings[name][0] for timings in rounds)
            update = statistics.median(timings[name][1] for timings in rounds)
            same_arch = paired_ratio(rounds, name, f"{name.split()[0]} adamw")
            shape = f"{n_layer}x{n_embd}"
            print(
                f"{shape:<10}{name:<17}{step * 1e3:>9.1f}{update * 1e3:>11.2f}{same_arch:>9.2f}"
                f"{paired_ratio(rounds, name, REFERENCE):>14.2f}"
            )

if __name__ == "__main__":
    main()
