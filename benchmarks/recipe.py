"""The training recipe: GPT-2 with AdamW (today's default) against Qwen3's block with Muon, through the real loop.

Every run is `hellogpt train`'s own path (`hellogpt.train.loop.TrainingRun` on a config resolved from settings, as
`--set` gives them), on data prepared by `hellogpt.data.prepare`. Runs that are compared advance side by side, ten
steps at a time, the one with the least training time so far first, so that a busy machine slows them alike. Times are
the loop's own step times (evaluation and saving excluded); per-step costs are medians over the run.

- `shakespeare`: tiny Shakespeare by character, 6 layers x 192, block 128, batch 8, 2000 steps, the same batches
  (same seed) for both; val loss every 100 steps. Reported: the steps and the time `qwen3`+Muon needs to reach the
  GPT-2 recipe's final val loss (interpolated between evaluations; time = steps x median step time), and the val loss
  of a `qwen3`+Muon run planned (schedule included) for the GPT-2 recipe's wall time. Goals: <= 0.4x, >= 0.25 lower.
- `poe`: the shipped Edgar Allan Poe at a fixed training-time budget (`--minutes`), 6 layers x 256, block 256, batch 8:
  GPT-2 BPE + `gpt2` (today's default) vs `qwen3` + GPT-2 BPE vs `qwen3` + a BPE of 8192 trained on the corpus, both
  `qwen3` at the `poe-sweep`'s rates. Each
  run's step time is measured first (a few steps each, side by side); each then trains for as many steps as fit its
  budget, with its schedule planned for them. Scored by `hellogpt eval`'s bits per byte on the val split's first
  windows (fair across tokenizers). Goal: the best >= 15% lower than today's.
- `poe-sweep`: `qwen3`+Muon with bpe:8192 on Poe, 4 layers x 128, block 256, batch 8, 300 steps, over rate triples
  (the untied embedding's own rate, AdamW's for head and vectors, Muon's); bits per byte at the end.
- `sweep`: short `qwen3`+Muon runs on the `shakespeare` setup over a grid of the Muon rate and the AdamW rate (of the
  embeddings, head and 1-D parameters), side by side; val loss at the end.

    python benchmarks/recipe.py [--experiments shakespeare,poe] [--minutes 10] [--quick]
    python benchmarks/recipe.py --experiments sweep [--sweep-steps 600]
    python benchmarks/recipe.py --experiments poe-sweep [--poe-sweep-steps 300]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

# Read by OpenMP when torch loads: threads sleep while they wait (this machine is shared; see README.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from hellogpt.config.layers import resolve_config  # noqa: E402
from hellogpt.train.events import EvalEvent, RunFinished, RunStarted, StepEvent  # noqa: E402
from hellogpt.train.loop import TrainingRun  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = REPO_ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
TABLE_WIDTH = 160
LOG_INTERVAL = 10
# The first logged steps pay for oneDNN's kernel choice and the allocator's warm-up: left out of the medians.
WARMUP_READINGS = 2

# The two recipes: architecture and optimizer, each with its learning rates.
GPT2_ADAMW = ["model.arch=gpt2", "optim.name=adamw"]
QWEN3_MUON = ["model.arch=qwen3", "optim.name=muon"]

EVERY_RUN = [
    "model.dropout=0.0", "model.bias=false", "train.gradient_accumulation_steps=1", "train.always_save_checkpoint=false",
    "system.device=cpu", "system.compile=false", "system.peak_flops=1e12", "sample.max_new_tokens=1",
]
# Layers x width / block / batch; heads of 32.
SHAKESPEARE_SHAPE = "6x192/128/8"
POE_SHAPE = "6x256/256/8"
HEAD_SIZE = 32
# GPT-2 + AdamW at nanoGPT's shakespeare_char rates (the shakespeare_char profile's).
GPT2_RATES = ["optim.learning_rate=1e-3", "optim.min_lr=1e-4", "optim.beta2=0.99"]
# Qwen3 + Muon: the Muon rate for hidden matrices, AdamW's for embeddings, head and vectors (see the sweep).
QWEN3_RATES = ["optim.muon_learning_rate=0.02", "optim.learning_rate=4e-3", "optim.min_lr=4e-4", "optim.beta2=0.99"]
# On a BPE corpus the untied embedding's rows each train only where their token occurs: at a rate of their own they
# leave their random start in a few hundred steps (the poe-sweep's winner; the head and vectors take 16e-3).
POE_QWEN3_RATES = [*QWEN3_RATES, "optim.embedding_learning_rate=0.2", "optim.learning_rate=16e-3", "optim.min_lr=16e-4"]
# The poe-sweep: (embedding rate, AdamW rate of head and vectors, Muon rate), the first without a rate of its own.
POE_SWEEP = [(None, 4e-3, 0.02), (0.2, 4e-3, 0.02), (0.2, 4e-3, 0.04), (0.2, 8e-3, 0.01), (0.2, 8e-3, 0.02),
             (0.5, 8e-3, 0.02), (0.1, 16e-3, 0.02), (0.2, 16e-3, 0.02), (0.2, 32e-3, 0.02)]
POE_SWEEP_SHAPE = "4x128/256/8"


@dataclass
class Contender:
    """One training run, advanced a few steps at a time, with what it reported."""

    label: str
    settings: list[str]
    data_dir: Path
    work: Path
    dtype: str = "?"
    step_ms: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    seconds_at_step: dict[int, float] = field(default_factory=dict)
    val_at_step: dict[int, float] = field(default_factory=dict)
    finished: Optional[RunFinished] = None
    _events: Optional[Iterator] = None
    _last_step: int = 0

    def start(self, stack: contextlib.ExitStack) -> None:
        """Set the run up (in `stack`, which tears it down)."""
        resolved = resolve_config(None, [], [*self.settings, f"train.runs_dir={self.work / 'runs'}"])
        self.work.mkdir(parents=True, exist_ok=True)
        run = stack.enter_context(
            TrainingRun(resolved, data_dir=self.data_dir, checkpoint_path=self.work / f"{slug(self.label)}.pt")
        )
        self._events = run.events()

    def advance(self) -> bool:
        """Train up to its next logged step (evaluating and saving on the way); False once the run has ended."""
        assert self._events is not None, "start() first"
        for event in self._events:
            if isinstance(event, RunStarted):
                self.dtype = event.dtype
            elif isinstance(event, StepEvent):
                self.step_ms.append(event.ms_per_step)
                self.train_seconds += event.ms_per_step / 1000 * (event.step - self._last_step)
                self.seconds_at_step[event.step] = self.train_seconds
                self._last_step = event.step
                return True
            elif isinstance(event, EvalEvent):
                self.val_at_step[event.step] = event.val_loss
            elif isinstance(event, RunFinished):
                self.finished = event
                return False
        return False

    @property
    def median_ms(self) -> float:
        readings = self.step_ms[WARMUP_READINGS:] or self.step_ms
        return statistics.median(readings)

    @property
    def final_val(self) -> float:
        return self.val_at_step[max(self.val_at_step)]

    @property
    def last_checkpoint(self) -> Path:
        assert self.finished is not None and self.finished.checkpoint_paths, f"{self.label} saved nothing"
        return Path(self.finished.checkpoint_paths[-1])


def shape_settings(shape: str) -> list[str]:
    """"6x192/128/8" -> the model and batch settings (heads of HEAD_SIZE)."""
    layers_width, block, batch = shape.split("/")
    layers, width = (int(part) for part in layers_width.split("x"))
    return [f"model.n_layer={layers}", f"model.n_embd={width}", f"model.n_head={max(1, width // HEAD_SIZE)}",
            f"model.block_size={block}", f"train.batch_size={batch}"]


def slug(label: str) -> str:
    return "".join(character if character.isalnum() else "_" for character in label)


def race(contenders: list[Contender]) -> None:
    """Train them side by side: always the one with the least training time so far, up to its next log line."""
    with contextlib.ExitStack() as stack:
        for contender in contenders:
            contender.start(stack)
        running = list(contenders)
        while running:
            slowest = min(running, key=lambda contender: contender.train_seconds)
            if not slowest.advance():
                running.remove(slowest)


def first_step_reaching(val_at_step: dict[int, float], target: float) -> Optional[float]:
    """The step at which the val-loss curve first reaches `target`, linear between evaluations; None if never."""
    previous: Optional[tuple[int, float]] = None
    for step in sorted(val_at_step):
        loss = val_at_step[step]
        if loss <= target:
            if previous is None or previous[1] == loss:
                return float(step)
            before_step, before_loss = previous
            return before_step + (before_loss - target) / (before_loss - loss) * (step - before_step)
        previous = (step, loss)
    return None


def val_at(val_at_step: dict[int, float], step: float) -> float:
    """The val loss at `step`, linear between evaluations (the last one past the end)."""
    steps = sorted(val_at_step)
    if step >= steps[-1]:
        return val_at_step[steps[-1]]
    for before, after in zip(steps, steps[1:]):
        if before <= step <= after:
            share = (step - before) / (after - before)
            return val_at_step[before] + share * (val_at_step[after] - val_at_step[before])
    return val_at_step[steps[0]]


# ------------------------------------------------------------------ data


def prepared(work: Path, name: str, sources: list[str], tokenizer: str) -> Path:
    """`hellogpt prepare` of `sources` into work/data/name (once per work folder)."""
    from hellogpt.data.prepare import prepare_dataset

    out = work / "data" / name
    prepare_dataset(sources, out, tokenizer=tokenizer)
    return out


def shakespeare_data(work: Path) -> Path:
    if not SHAKESPEARE.is_file():
        raise SystemExit(f"{SHAKESPEARE} is missing: this benchmark needs ../shared/data beside the repository")
    return prepared(work, "shakespeare_char", [str(SHAKESPEARE)], "char")


# ------------------------------------------------------------------ experiments


def schedule(steps: int, warmup: int, eval_interval: int, eval_iters: int) -> list[str]:
    return [
        f"train.max_iters={steps}", f"optim.lr_decay_iters={steps}", f"optim.warmup_iters={warmup}",
        f"train.eval_interval={eval_interval}", f"train.eval_iters={eval_iters}", f"train.log_interval={LOG_INTERVAL}",
    ]


@dataclass(frozen=True)
class Plan:
    """What the runs of one experiment share: shape, steps, evaluation."""

    shape: str
    steps: int
    evaluations: int = 20
    eval_iters: int = 50

    def settings(self, steps: Optional[int] = None) -> list[str]:
        steps = steps or self.steps
        every = max(LOG_INTERVAL, steps // self.evaluations // LOG_INTERVAL * LOG_INTERVAL)
        return [*EVERY_RUN, *shape_settings(self.shape), *schedule(steps, max(1, steps // 20), every, self.eval_iters)]


def run_shakespeare(work: Path, plan: Plan, recipes: dict[str, list[str]], with_planned_run: bool) -> None:
    data = shakespeare_data(work)
    contenders = [
        Contender(label, [*plan.settings(), *settings], data, work / "shakespeare" / slug(label))
        for label, settings in recipes.items()
    ]
    race(contenders)
    reference, *others = contenders
    reference_seconds = plan.steps * reference.median_ms / 1000
    planned: dict[str, Contender] = {}
    for contender in others if with_planned_run else []:
        # A run of the steps that fit the reference's time, its schedule planned for them (as --max-time would).
        fitting = min(plan.steps, round(reference_seconds * 1000 / contender.median_ms / LOG_INTERVAL) * LOG_INTERVAL)
        planned[contender.label] = Contender(
            f"{contender.label}, {fitting} steps", [*plan.settings(fitting), *recipes[contender.label]], data,
            work / "shakespeare" / (slug(contender.label) + "_planned"),
        )
    if planned:
        race(list(planned.values()))
    print_shakespeare(contenders, planned, plan)


def run_poe(work: Path, shape: str, minutes: float, recipes: dict[str, tuple[str, list[str]]],
            calibration_steps: int, text_bytes: int) -> None:
    budget = minutes * 60
    datasets = {tokenizer: prepared(work, f"poe_{slug(tokenizer)}", ["builtin:edgar_poe"], tokenizer)
                for tokenizer, _ in recipes.values()}
    # Step times first, side by side (the loss of these few steps is not used).
    calibrating = Plan(shape, calibration_steps, evaluations=1, eval_iters=1)
    calibration = [
        Contender(label, [*calibrating.settings(), *settings, "train.log_interval=1"], datasets[tokenizer],
                  work / "poe_calibration" / slug(label))
        for label, (tokenizer, settings) in recipes.items()
    ]
    race(calibration)
    contenders = []
    for measured, (label, (tokenizer, settings)) in zip(calibration, recipes.items()):
        steps = max(LOG_INTERVAL, int(budget * 1000 / measured.median_ms))
        timed = Plan(shape, steps, evaluations=1, eval_iters=4)
        # Every step logged: its time counts (steps past the last log line would not).
        contenders.append(Contender(label, [*timed.settings(), *settings, "train.log_interval=1"], datasets[tokenizer],
                                    work / "poe" / slug(label)))
    race(contenders)
    scores = [bits_per_byte(contender, datasets[recipes[contender.label][0]], text_bytes) for contender in contenders]
    print_poe(contenders, [recipes[contender.label][0] for contender in contenders], scores, shape, minutes)


def run_sweep(work: Path, plan: Plan, muon_rates: list[float], adamw_rates: list[float], full_grid: bool) -> None:
    """Muon rate x AdamW rate: the full grid, or a cross through the middle values (one rate moved at a time)."""
    data = shakespeare_data(work)
    if full_grid:
        grid = list(itertools.product(muon_rates, adamw_rates))
    else:
        middle_muon, middle_adamw = muon_rates[len(muon_rates) // 2], adamw_rates[len(adamw_rates) // 2]
        grid = [(muon, middle_adamw) for muon in muon_rates] + [(middle_muon, a) for a in adamw_rates if a != middle_adamw]
    contenders = [
        Contender(f"muon {muon:g}, adamw {adamw:g}",
                  [*plan.settings(), *QWEN3_MUON, *QWEN3_RATES, f"optim.muon_learning_rate={muon}",
                   f"optim.learning_rate={adamw}", f"optim.min_lr={adamw / 10}"],
                  data, work / "sweep" / f"{muon:g}_{adamw:g}")
        for muon, adamw in grid
    ]
    race(contenders)
    print_sweep(contenders, plan)


def run_poe_sweep(work: Path, shape: str, steps: int, text_bytes: int) -> None:
    """qwen3 + Muon with bpe:8192 on Poe, a fixed number of steps per rate triple, side by side; bits per byte."""
    data = prepared(work, "poe_bpe_8192", ["builtin:edgar_poe"], "bpe:8192")
    plan = Plan(shape, steps, evaluations=1, eval_iters=4)
    contenders = []
    for embedding, adamw, muon in POE_SWEEP:
        rates = [f"optim.muon_learning_rate={muon}", f"optim.learning_rate={adamw}", f"optim.min_lr={adamw / 10}"]
        if embedding is not None:
            rates.append(f"optim.embedding_learning_rate={embedding}")
        label = f"embedding {'as adamw' if embedding is None else f'{embedding:g}'}, adamw {adamw:g}, muon {muon:g}"
        contenders.append(Contender(label, [*plan.settings(), *QWEN3_MUON, *QWEN3_RATES, *rates], data,
                                    work / "poe_sweep" / slug(label)))
    race(contenders)
    scores = [bits_per_byte(contender, data, text_bytes)[1] for contender in contenders]
    table = new_table(f"qwen3 + Muon learning rates, edgar_poe bpe:8192, {describe_shape(shape)}, {steps} steps",
                      ["rates", "val bits/byte", "ms/step"])
    for contender, bits in zip(contenders, scores):
        mark = "**" if bits == min(scores) else ""
        table.add_row(contender.label, f"{mark}{bits:.4f}{mark}", f"{contender.median_ms:.1f}")
    show(table, cpu_line())


def bits_per_byte(contender: Contender, data_dir: Path, text_bytes: int) -> tuple[float, float, int]:
    """`hellogpt eval`'s scoring of the final weights on the windows that cover the val split's first `text_bytes`
    bytes (the same text whatever the tokenizer): (loss per token, bits per byte, bytes scored)."""
    import numpy as np

    from hellogpt.data.loader import open_dataset
    from hellogpt.evaluate import checkpoint_target, evaluate_model, load_target_model, window_starts
    from hellogpt.hardware.devices import choose_dtype

    target = checkpoint_target(str(contender.last_checkpoint))
    dataset = open_dataset(data_dir)
    length = target.architecture.block_size
    token_bytes = np.array([len(dataset.tokenizer.token_bytes(token)) for token in range(dataset.tokenizer.vocab_size)])
    covered = np.cumsum(token_bytes[np.asarray(dataset.tokens("val"), dtype=np.int64)])
    windows = max(1, int(np.searchsorted(covered, text_bytes)) // length)
    starts = window_starts(dataset, "val", length, windows)
    device = torch.device("cpu")
    dtype = choose_dtype("auto", device, target.architecture)
    scored = evaluate_model(load_target_model(target), contender.label, dataset.tokenizer, dataset, "val", starts,
                            length, device, dtype)
    return scored.loss, scored.bits_per_byte, scored.bytes


# ------------------------------------------------------------------ tables


def cpu_line() -> str:
    """The CPU model, the threads torch uses and the OpenMP wait policy (every figure depends on them)."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (f"CPU: {model}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads "
            f"({torch.backends.cpu.get_cpu_capability()}), OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
            f"load average {load}")


def new_table(title: str, columns: list[str], left: int = 1):
    from rich.table import Table

    table = Table(title=title)
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index < left else "right")
    return table


def show(table, *notes: str) -> None:
    from rich.console import Console

    console = Console(width=TABLE_WIDTH)
    console.print(table)
    for note in notes:
        console.print(f"[dim]{note}[/]")


def print_shakespeare(contenders: list[Contender], planned: dict[str, Contender], plan: Plan) -> None:
    reference = contenders[0]
    steps, target, reference_ms = plan.steps, reference.final_val, reference.median_ms
    reference_seconds = steps * reference_ms / 1000
    in_time_column = "val in ref's time (planned run)" if planned else "val in ref's time (interpolated)"
    table = new_table(
        f"tiny Shakespeare (char), {describe_shape(plan.shape)}, {steps} steps, same batches",
        ["recipe", "dtype", "ms/step", "step cost", f"val @ {steps}", "steps to ref's val", "time to it", "vs ref",
         in_time_column, "lower by"], left=2,
    )
    for index, contender in enumerate(contenders):
        reached = first_step_reaching(contender.val_at_step, target) if index else float(steps)
        seconds = None if reached is None else reached * contender.median_ms / 1000
        fitted = planned.get(contender.label)
        if fitted is not None:
            in_time, where = fitted.final_val, f" ({fitted.label.split(', ')[-1]})"
        else:
            fitting = min(steps, reference_seconds * 1000 / contender.median_ms)
            in_time, where = val_at(contender.val_at_step, fitting), f" (@ {fitting:.0f})"
        table.add_row(
            contender.label, contender.dtype, f"{contender.median_ms:.1f}", f"{contender.median_ms / reference_ms:.2f}x",
            f"{contender.final_val:.4f}",
            "never" if reached is None else f"{reached:.0f}",
            "-" if seconds is None else f"{seconds:.1f} s",
            "-" if seconds is None else f"**{seconds / reference_seconds:.2f}x**" if index else "1.00x",
            f"{in_time:.4f}{where}",
            f"**{target - in_time:.3f}**" if index else "",
        )
    notes = [cpu_line(), "time = steps x median step time (the loop's own step times; evaluation excluded); "
             "training time measured: " + ", ".join(f"{c.label} {c.train_seconds:.1f} s" for c in contenders)]
    for contender in contenders:
        curve = ", ".join(f"{step}: {loss:.3f}" for step, loss in sorted(contender.val_at_step.items()))
        notes.append(f"val curve {contender.label}: {curve}")
    for contender in planned.values():
        notes.append(f"planned run {contender.label}: {contender.train_seconds:.1f} s measured, val {contender.final_val:.4f}")
    show(table, *notes)


def describe_shape(shape: str) -> str:
    layers_width, block, batch = shape.split("/")
    return f"{layers_width}, block {block}, batch {batch}"


def print_poe(contenders: list[Contender], tokenizers: list[str], scores: list[tuple[float, float, int]],
              shape: str, minutes: float) -> None:
    table = new_table(
        f"edgar_poe, {describe_shape(shape)}, {minutes:g} minutes of training each",
        ["recipe", "tokenizer", "dtype", "ms/step", "step cost", "steps", "trained", "val loss/token", "val bits/byte",
         "vs today"], left=3,
    )
    reference_bits, reference_ms = scores[0][1], contenders[0].median_ms
    for contender, tokenizer, (loss, bits, _) in zip(contenders, tokenizers, scores):
        steps = contender.finished.step if contender.finished else max(contender.seconds_at_step, default=0)
        table.add_row(
            contender.label, tokenizer, contender.dtype, f"{contender.median_ms:.0f}",
            f"{contender.median_ms / reference_ms:.2f}x", str(steps), f"{contender.train_seconds:.0f} s", f"{loss:.4f}",
            f"{bits:.4f}", f"**{(1 - bits / reference_bits) * 100:.1f}% lower**" if bits != reference_bits else "ref",
        )
    show(table, cpu_line(), "scored on the windows covering val's first bytes: " + ", ".join(f"{score[2]:,}" for score in scores))


def print_sweep(contenders: list[Contender], plan: Plan) -> None:
    table = new_table(f"qwen3 + Muon learning rates, tiny Shakespeare {describe_shape(plan.shape)}, {plan.steps} steps",
                      ["rates", "val loss", "ms/step"])
    best = min(contender.final_val for contender in contenders)
    for contender in contenders:
        mark = "**" if contender.final_val == best else ""
        table.add_row(contender.label, f"{mark}{contender.final_val:.4f}{mark}", f"{contender.median_ms:.1f}")
    show(table, cpu_line())


def rates(text: str) -> list[float]:
    return [float(value) for value in text.split(",") if value.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", default="shakespeare,poe", help="Comma-separated: shakespeare, poe, sweep, poe-sweep.")
    parser.add_argument("--quick", action="store_true", help="Few steps and seconds: checks that it runs.")
    parser.add_argument("--shape", default=SHAKESPEARE_SHAPE, help="shakespeare and sweep: LAYERSxWIDTH/BLOCK/BATCH.")
    parser.add_argument("--steps", type=int, default=2000, help="shakespeare: steps of each recipe.")
    parser.add_argument("--evaluations", type=int, default=20, help="shakespeare: evaluations along each run.")
    parser.add_argument("--eval-iters", type=int, default=50, help="shakespeare and sweep: batches per evaluation.")
    parser.add_argument("--planned", action="store_true",
                        help="shakespeare: also train qwen3 for the steps that fit GPT-2's time, schedule planned for them.")
    parser.add_argument("--poe-shape", default=POE_SHAPE, help="poe: LAYERSxWIDTH/BLOCK/BATCH.")
    parser.add_argument("--minutes", type=float, default=10.0, help="poe: training minutes of each recipe.")
    parser.add_argument("--calibration-steps", type=int, default=12, help="poe: steps timed to plan each run.")
    parser.add_argument("--poe-bytes", type=int, default=100_000, help="poe: val bytes scored (bits per byte).")
    parser.add_argument("--sweep-steps", type=int, default=600, help="sweep: steps of each run.")
    parser.add_argument("--muon-rates", default="0.01,0.02,0.04", help="sweep: Muon rates.")
    parser.add_argument("--adamw-rates", default="0.002,0.004,0.008", help="sweep: AdamW rates (embeddings, head).")
    parser.add_argument("--poe-sweep-shape", default=POE_SWEEP_SHAPE, help="poe-sweep: LAYERSxWIDTH/BLOCK/BATCH.")
    parser.add_argument("--poe-sweep-steps", type=int, default=300, help="poe-sweep: steps of each run.")
    parser.add_argument("--full-grid", action="store_true", help="sweep: every pair (default: one rate moved at a time).")
    parser.add_argument("--gpt2-only", action="store_true", help="Only the GPT-2 recipe (a check of the script).")
    parser.add_argument("--work", type=Path, default=None, help="Work folder (default: a temporary one, removed).")
    options = parser.parse_args()
    if options.quick:
        options.steps, options.minutes, options.calibration_steps, options.sweep_steps = 40, 0.25, 4, 20
        options.poe_sweep_steps = 4
        options.eval_iters, options.poe_bytes = 4, 2000
    experiments = [name.strip() for name in options.experiments.split(",") if name.strip()]
    shakespeare_recipes = {"gpt2 + AdamW": [*GPT2_ADAMW, *GPT2_RATES], "qwen3 + Muon": [*QWEN3_MUON, *QWEN3_RATES]}
    poe_recipes = {
        "gpt2 + AdamW (today)": ("gpt2", [*GPT2_ADAMW, *GPT2_RATES]),
        "qwen3 + Muon": ("gpt2", [*QWEN3_MUON, *POE_QWEN3_RATES]),
        "qwen3 + Muon, bpe:8192": ("bpe:8192", [*QWEN3_MUON, *POE_QWEN3_RATES]),
    }
    if options.gpt2_only:
        shakespeare_recipes = dict(list(shakespeare_recipes.items())[:1])
        poe_recipes = dict(list(poe_recipes.items())[:1])
    work = options.work or Path(tempfile.mkdtemp(prefix="hellogpt-recipe-"))
    started = time.perf_counter()
    try:
        if "shakespeare" in experiments:
            plan = Plan(options.shape, options.steps, options.evaluations, options.eval_iters)
            run_shakespeare(work, plan, shakespeare_recipes, options.planned)
        if "poe" in experiments:
            run_poe(work, options.poe_shape, options.minutes, poe_recipes, options.calibration_steps, options.poe_bytes)
        if "poe-sweep" in experiments:
            run_poe_sweep(work, options.poe_sweep_shape, options.poe_sweep_steps, options.poe_bytes)
        if "sweep" in experiments:
            plan = Plan(options.shape, options.sweep_steps, 1, options.eval_iters)
            run_sweep(work, plan, rates(options.muon_rates), rates(options.adamw_rates), options.full_grid)
    finally:
        if options.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"whole benchmark: {(time.perf_counter() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
