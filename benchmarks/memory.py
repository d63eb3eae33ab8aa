"""Peak memory and step time of `hellogpt tune` on GPT-2 shapes: full tune against LoRA and activation checkpointing.

A random GPT-2 of each shape is saved with `save_pretrained` (cached under --cache), then every configuration
runs the real command, `hellogpt tune --from DIR` on the shipped poems (batch 1, block 1024, 2 steps, a closing
evaluation of one batch and the save), in a fresh process; its peak resident memory is read from the kernel
(wait4's ru_maxrss) and its step time from the plain log (the second step: the first one warms up). Ratios are
against the full tune of the same shape measured in the same invocation. A configuration whose estimate does not
fit in the available RAM is reported as skipped, not run.

    python benchmarks/memory.py                       # gpt2-medium: full, full+ckpt, lora, lora+ckpt
    python benchmarks/memory.py --shapes gpt2-xl --modes lora+ckpt
    python benchmarks/memory.py --quick               # gpt2 (124M) shape: a check that the script works
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

SHAPES = {  # n_layer, n_head, n_embd
    "gpt2": (12, 12, 768),
    "gpt2-medium": (24, 16, 1024),
    "gpt2-large": (36, 20, 1280),
    "gpt2-xl": (48, 25, 1600),
}
MODES = {
    "full": (),
    "full+ckpt": ("--set", "train.activation_checkpointing=true"),
    "lora": ("--lora",),
    "lora+ckpt": ("--lora", "--set", "train.activation_checkpointing=true"),
}
# Bytes per parameter of a full fp32 AdamW tune: weights, gradients and two moments; activations come on top.
FULL_TUNE_BYTES_PER_PARAMETER = 16
STEP_TIME = re.compile(r"step 2/2 \| loss ([\d.]+) .*? \| ([\d.]+) ms/step")
REPO_ROOT = Path(__file__).resolve().parents[1]


def gpt2_parameters(shape: tuple[int, int, int]) -> int:
    n_layer, _, n_embd = shape
    return 12 * n_layer * n_embd * n_embd + 13 * n_layer * n_embd + 50257 * n_embd + 1024 * n_embd + 2 * n_embd


def save_random_model(directory: Path, shape: tuple[int, int, int]) -> None:
    """In a child process, so that the model's memory is given back before any measurement."""
    n_layer, n_head, n_embd = shape
    script = (
        "import sys, torch\nfrom transformers import GPT2Config, GPT2LMHeadModel\ntorch.manual_seed(0)\n"
        f"GPT2LMHeadModel(GPT2Config(n_layer={n_layer}, n_head={n_head}, n_embd={n_embd})).save_pretrained(sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", script, str(directory)], check=True)


def available_bytes() -> int:
    with open("/proc/meminfo") as meminfo:
        fields = dict(line.split(":", 1) for line in meminfo)
    return int(fields["MemAvailable"].split()[0]) * 1024


def run_tune(model_dir: Path, data_dir: Path, work: Path, mode: str) -> dict:
    """One configuration in a fresh process: peak RSS, ms of the second step, its loss."""
    settings = {
        "train.batch_size": 1, "train.gradient_accumulation_steps": 1, "train.max_iters": 2, "train.eval_interval": 2,
        "train.eval_iters": 1, "train.log_interval": 1, "train.always_save_checkpoint": True,
        "train.out_dir": str(work / "checkpoints"), "train.runs_dir": str(work / "runs"),
        "train.checkpoint_name": f"bench-{mode}", "sample.max_new_tokens": 1, "system.device": "cpu", "system.compile": False,
    }
    arguments = [sys.executable, "-m", "hellogpt", "tune", "--from", str(model_dir), "--data", str(data_dir), "--plain"]
    for key, value in settings.items():
        arguments += ["--set", f"{key}={value}"]
    arguments += list(MODES[mode])
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "NO_COLOR": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    log = work / f"{mode}.log"
    with open(log, "w") as output:
        process = subprocess.Popen(arguments, stdout=output, stderr=subprocess.STDOUT, env=environment)
        _, status, usage = os.wait4(process.pid, 0)
    text = log.read_text()
    match = STEP_TIME.search(text)
    if os.waitstatus_to_exitcode(status) != 0 or match is None:
        return {"error": text.strip().splitlines()[-1] if text.strip() else f"exit {status}"}
    checkpoint = work / "checkpoints" / f"bench-{mode}.pt"
    result = {
        "peak_rss": usage.ru_maxrss * 1024,
        "ms_per_step": float(match.group(2)),
        "loss": float(match.group(1)),
        "checkpoint_bytes": checkpoint.stat().st_size if checkpoint.exists() else None,
    }
    for path in (work / "checkpoints").glob("bench-*"):
        path.unlink()
    return result


def prepare_poems(folder: Path) -> Path:
    from hellogpt.data.prepare import prepare_dataset
    from hellogpt.data.sources import CORPORA_DIR

    return prepare_dataset([str(CORPORA_DIR / "poems")], folder / "poems").out_dir


def cpu_flags() -> str:
    from hellogpt.hardware.devices import cpu_has_native_bf16
    from hellogpt.hardware.readings import describe_cpu

    base = "native bf16 (AVX512-BF16/AMX): LoRA base held in bf16" if cpu_has_native_bf16() else "no native bf16: fp32 base"
    return f"{describe_cpu()}; {base}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["gpt2-medium"], choices=list(SHAPES))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--quick", action="store_true", help="gpt2 shape only: a check that the script works")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "hellogpt-memory-bench")
    options = parser.parse_args()
    shapes = ["gpt2"] if options.quick else options.shapes
    options.cache.mkdir(parents=True, exist_ok=True)
    data_dir = prepare_poems(options.cache)
    print(f"CPU: {cpu_flags()}; {os.cpu_count()} cores; {available_bytes() / 2**30:.1f} GiB available")
    print("| shape | parameters | configuration | peak RSS (GB) | vs full tune | s/step | loss at step 2 | checkpoint (MB) |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for shape_name in shapes:
        shape = SHAPES[shape_name]
        model_dir = options.cache / shape_name
        if not (model_dir / "config.json").exists():
            save_random_model(model_dir, shape)
        parameters = gpt2_parameters(shape)
        reference = None
        with tempfile.TemporaryDirectory(dir=options.cache) as work_dir:
            for mode in options.modes:
                estimate = parameters * (FULL_TUNE_BYTES_PER_PARAMETER if mode.startswith("full") else 3)
                if estimate > 0.9 * available_bytes():
                    print(f"| {shape_name} | {parameters / 1e6:.0f}M | {mode} | skipped: needs about {estimate / 1e9:.1f} GB "
                          f"before activations, {available_bytes() / 1e9:.1f} GB available | | | | |", flush=True)
                    continue
                result = run_tune(model_dir, data_dir, Path(work_dir), mode)
                if "error" in result:
                    print(f"| {shape_name} | {parameters / 1e6:.0f}M | {mode} | failed: {result['error'][:80]} | | | | |", flush=True)
                    continue
                if mode == "full":
                    reference = result["peak_rss"]
                ratio = f"{result['peak_rss'] / reference:.2f}x" if reference else "-"
                size = f"{result['checkpoint_bytes'] / 1e6:,.1f}" if result["checkpoint_bytes"] else "-"
                print(
                    f"| {shape_name} | {parameters / 1e6:.0f}M | {mode} | {result['peak_rss'] / 1e9:.2f} | {ratio} | "
                    f"{result['ms_per_step'] / 1000:.1f} | {result['loss']:.3f} | {size} |",
                    flush=True,
                )
    print(f"full tune, fp32 AdamW: {FULL_TUNE_BYTES_PER_PARAMETER} bytes per parameter before activations "
          f"(gpt2-xl: {gpt2_parameters(SHAPES['gpt2-xl']) * FULL_TUNE_BYTES_PER_PARAMETER / 1e9:.1f} GB)")


if __name__ == "__main__":
    main()
