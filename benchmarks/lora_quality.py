"""LoRA against a full fine-tune on real text: a small GPT trained on Poe, then tuned on the poems both ways.

Every stage is the real command in a work folder: `hellogpt train` on builtin:edgar_poe, `hellogpt tune` (full, at
the tune defaults' rate) and `hellogpt tune --lora` (at LoRA's default rate) for the same steps and batches on
builtin:poems, then one `hellogpt eval` of the base and both tunes on the poems' val split (the same windows).

    python benchmarks/lora_quality.py [--train-steps 400] [--tune-steps 100] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL_MODEL = {"model.n_layer": 4, "model.n_head": 4, "model.n_embd": 256, "model.block_size": 128}
BATCHES = {"train.batch_size": 16, "train.gradient_accumulation_steps": 1, "train.log_interval": 50}


def hellogpt(work: Path, *arguments: str, settings: dict) -> str:
    command = [sys.executable, "-m", "hellogpt", *arguments]
    for key, value in settings.items():
        command += ["--set", f"{key}={value}"]
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "NO_COLOR": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    result = subprocess.run(command, cwd=work, env=environment, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(arguments[:3])} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-steps", type=int, default=400)
    parser.add_argument("--tune-steps", type=int, default=100)
    parser.add_argument("--work", type=Path, default=None)
    options = parser.parse_args()
    work = options.work or Path(tempfile.mkdtemp(prefix="hellogpt-lora-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    steps = options.train_steps
    base = {**SMALL_MODEL, **BATCHES, "train.max_iters": steps, "train.eval_interval": steps, "train.eval_iters": 10,
            "optim.learning_rate": 1e-3, "optim.warmup_iters": steps // 10, "optim.lr_decay_iters": steps,
            "optim.min_lr": 1e-4, "system.compile": False}
    hellogpt(work, "train", "--profile", "edgar_poe", "--checkpoint", "poe_small.pt", "--plain", settings=base)
    hellogpt(work, "prepare", "builtin:poems", "--out", "data/poems", settings={})
    tune = {**BATCHES, "train.max_iters": options.tune_steps, "train.eval_interval": options.tune_steps,
            "train.eval_iters": 10, "optim.warmup_iters": options.tune_steps // 10, "optim.lr_decay_iters": options.tune_steps,
            "system.compile": False}
    for name, extra in (("poems_full.pt", ()), ("poems_lora.pt", ("--lora",))):
        hellogpt(work, "tune", "--from", "poe_small.pt", "--data", "data/poems", "--checkpoint", name, "--plain", *extra,
                 settings=tune)
    print(hellogpt(work, "eval", "poe_small.pt", "poems_full.pt", "poems_lora.pt", "--data", "data/poems", settings={}))
    sizes = {name: (work / "checkpoints" / name).stat().st_size for name in ("poe_small.pt", "poems_full.pt", "poems_lora.pt")}
    print("checkpoint sizes (MB): " + ", ".join(f"{name} {size / 1e6:.1f}" for name, size in sizes.items()))
    print(f"work folder: {work}")


if __name__ == "__main__":
    main()
