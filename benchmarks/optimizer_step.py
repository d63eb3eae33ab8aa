"""Cost of a training step with optim.name=muon against optim.name=adamw, on the same model and batches.

A char-sized GPT (vocabulary 65, block 128, batch 8, fp32 on the CPU) at two shapes, 4 x 128 and 6 x 192. Each step
is what `hellogpt train` does in one optimizer step without accumulation: forward, backward, gradient clipping, the
update, zeroing the gradients. Three optimizers, each on its own copy of the same initial weights:
  adamw        the fused AdamW of build_optimizer (the reference);
  muon         build_optimizer's MuonWithAdamW (Newton-Schulz batched over the matrices of one shape);
  torch-muon   torch.optim.Muon (a Python loop of Newton-Schulz per matrix) beside the same fused AdamW.
Steps rotate between the optimizers so that a busy CPU slows all alike; reported are median ms per step after
warm-up, the median of the update alone, and each one's ratio to adamw (the goal for muon: at most 1.15).

    python benchmarks/optimizer_step.py [--steps N] [--warmup N] [--threads N] [--torch-muon]
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
from hellogpt.model.gpt import GPT, GPTConfig  # noqa: E402
from hellogpt.train.optimizer import build_optimizer  # noqa: E402

SHAPES = ((4, 128), (6, 192))
VOCABULARY = 65
BLOCK = 128
BATCH = 8
SEED = 1337
GRAD_CLIP = 1.0


class _TorchMuonBeside:
    """torch.optim.Muon on the block matrices and build_optimizer's fused AdamW on the rest, stepped together."""

    def __init__(self, model: nn.Module, optim: OptimConfig) -> None:
        blocks = [module for module in model.modules() if isinstance(module, nn.ModuleList)]
        hidden = {id(parameter) for block in blocks for parameter in block.parameters() if parameter.dim() == 2}
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


def _step_timer(n_layer: int, n_embd: int, name: str) -> Callable[[torch.Tensor, torch.Tensor], tuple[float, float]]:
    torch.manual_seed(SEED)
    config = GPTConfig(
        n_layer=n_layer,
        n_head=n_embd // 32,
        n_embd=n_embd,
        block_size=BLOCK,
        vocab_size=VOCABULARY,
        dropout=0.0,
        bias=True,
        arch="gpt2",
    )
    model = GPT(config).train()
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


def measure(n_layer: int, n_embd: int, steps: int, warmup: int, names: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """Median (step, update) seconds per optimizer, the optimizers' steps interleaved on the same batches."""
    timers = {name: _step_timer(n_layer, n_embd, name) for name in names}
    generator = torch.Generator().manual_seed(SEED)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for index in range(warmup + steps):
        batch = torch.randint(VOCABULARY, (BATCH, BLOCK + 1), generator=generator)
        inputs, targets = batch[:, :-1], batch[:, 1:]
        order = names[index % len(names):] + names[: index % len(names)]
        for name in order:
            timing = timers[name](inputs, targets)
            if index >= warmup:
                samples[name].append(timing)
    return {
        name: (statistics.median(step for step, _ in rows), statistics.median(update for _, update in rows))
        for name, rows in samples.items()
    }


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
    parser.add_argument("--steps", type=int, default=40, help="timed steps per optimizer and shape")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--torch-muon", action="store_true", help="also time torch.optim.Muon (slow: a loop per matrix)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = ("adamw", "muon", "torch-muon") if args.torch_muon else ("adamw", "muon")
    print(f"CPU: {_cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"vocabulary {VOCABULARY}, block {BLOCK}, batch {BATCH}, fp32; medians of {args.steps} interleaved steps")
    print(f"{'shape':<10}{'optimizer':<12}{'ms/step':>10}{'update ms':>11}{'step / adamw':>14}")
    for n_layer, n_embd in SHAPES:
        medians = measure(n_layer, n_embd, args.steps, args.warmup, names)
        reference = medians["adamw"][0]
        for name in names:
            step, update = medians[name]
            shape = f"{n_layer}x{n_embd}"
            print(f"{shape:<10}{name:<12}{step * 1e3:>10.1f}{update * 1e3:>11.2f}{step / reference:>14.2f}")


if __name__ == "__main__":
    main()
