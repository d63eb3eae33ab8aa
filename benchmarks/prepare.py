"""Claim: `hellogpt prepare` tokenises GPT-2 BPE faster than single-threaded `encode_ordinary` on every core it has.

Measures `prepare_dataset` (reading, chunking, threaded batch encoding, writing the bins) on the poems corpus shipped
with the package (builtin:poems) and
on a larger corpus made by repeating it in a temporary folder, against plain `encode_ordinary` of every file, one
after the other, in the same process. Prints a Markdown table of medians.

    python benchmarks/prepare.py            # poems + ~100 MB
    python benchmarks/prepare.py --quick    # poems + ~10 MB
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from hellogpt.data.prepare import prepare_dataset
from hellogpt.data.sources import CORPORA_DIR
from hellogpt.data.tokenizer import gpt2_tokenizer

POEMS = CORPORA_DIR / "poems"
MEGABYTE = 1_000_000


def repeated_corpus(source: Path, target_bytes: int, folder: Path) -> Path:
    """Copies of every file of `source` in numbered sub-folders until the corpus holds about `target_bytes`."""
    files = sorted(source.glob("*.txt"))
    corpus_bytes = sum(path.stat().st_size for path in files)
    for copy in range(max(1, round(target_bytes / corpus_bytes))):
        copy_dir = folder / f"copy_{copy:04d}"
        copy_dir.mkdir(parents=True)
        for path in files:
            shutil.copyfile(path, copy_dir / path.name)
    return folder


def corpus_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*.txt"))


def interleaved_medians(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each run, taking turns so that every run sees the same (shared, noisy) machine."""
    timings: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            timings[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in timings.items()}


def cpu_seconds() -> float:
    """CPU time of this process and of its ended children (the encoding workers, counted once `prepare` stops them)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def cores_busy(run: Callable[[], object]) -> float:
    """CPU seconds per wall second of one run, workers included: how many cores it kept busy."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    run()
    return (cpu_seconds() - cpu) / (time.perf_counter() - wall)


def encode_one_by_one(folder: Path) -> int:
    """The reference: read each file and `encode_ordinary` it on one thread."""
    encoding = gpt2_tokenizer().encoding
    return sum(len(encoding.encode_ordinary(path.read_text(encoding="utf-8"))) for path in sorted(folder.rglob("*.txt")))


REFERENCE_PROCESS = """
import sys
from pathlib import Path
from hellogpt.data.tokenizer import gpt2_tokenizer
encoding = gpt2_tokenizer().encoding
print(sum(len(encoding.encode_ordinary(p.read_text(encoding="utf-8"))) for p in sorted(Path(sys.argv[1]).rglob("*.txt"))))
"""


def run_process(arguments: list[str]) -> None:
    subprocess.run([sys.executable, *arguments], check=True, capture_output=True)


def whole_processes(corpus: Path, out_dir: Path, repeats: int) -> dict[str, float]:
    """Median wall seconds of `hellogpt prepare` and of the one-thread reference, each as its own process."""
    return interleaved_medians(
        {
            "prepare": lambda: run_process(["-m", "hellogpt", "prepare", str(corpus), "--out", str(out_dir), "--force"]),
            "reference": lambda: run_process(["-c", REFERENCE_PROCESS, str(corpus)]),
        },
        repeats,
    )


def peak_rss_megabytes() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MEGABYTE if sys.platform == "darwin" else peak * 1024 / MEGABYTE


def measure(name: str, corpus: Path, work_dir: Path, repeats: int) -> dict[str, object]:
    size = corpus_bytes(corpus) / MEGABYTE
    out_dir = work_dir / f"out_{name}"
    busy = cores_busy(lambda: prepare_dataset([str(corpus)], out_dir, force=True))  # also warms the page cache
    peak_after_prepare = peak_rss_megabytes()
    seconds = interleaved_medians(
        {
            "gpt2": lambda: prepare_dataset([str(corpus)], out_dir, force=True),
            "reference": lambda: encode_one_by_one(corpus),
            "char": lambda: prepare_dataset([str(corpus)], out_dir / "char", tokenizer="char", force=True),
        },
        repeats,
    )
    processes = whole_processes(corpus, out_dir / "process", repeats)
    return {
        "corpus": name,
        "MB": size,
        "prepare gpt2 MB/s": size / seconds["gpt2"],
        "encode_ordinary MB/s": size / seconds["reference"],
        "ratio": seconds["reference"] / seconds["gpt2"],
        "process ratio": processes["reference"] / processes["prepare"],
        "prepare cores busy": busy,
        "prepare char MB/s": size / seconds["char"],
        "peak RSS MB": peak_after_prepare,
    }


def print_table(rows: list[dict[str, object]]) -> None:
    headers = list(rows[0])
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join("---" if header == "corpus" else "---:" for header in headers) + "|")
    for row in rows:
        cells = [f"{value:.2f}x" if key.endswith("ratio") else f"{value:.1f}" if isinstance(value, float) else str(value)
                 for key, value in row.items()]
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a ~10 MB repeated corpus instead of ~100 MB")
    arguments = parser.parse_args()
    gpt2_tokenizer().load()  # built once (~0.2 s), outside every timing
    target_megabytes = 10 if arguments.quick else 100
    with tempfile.TemporaryDirectory(prefix="hellogpt-bench-") as temp:
        work_dir = Path(temp)
        big = repeated_corpus(POEMS, target_megabytes * MEGABYTE, work_dir / "repeated")
        rows = [
            measure("poems", POEMS, work_dir, repeats=5),
            measure(f"poems x{len(list(big.iterdir()))}", big, work_dir, repeats=3),
        ]
    # Imported here, not at the top: it loads torch, and the spawned encoding workers import this module again.
    from hellogpt.hardware.readings import describe_cpu

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"prepare on {cores} cores of {describe_cpu()} (load average {load}); medians of interleaved runs; "
          "ratio = prepare gpt2 speed / single-threaded encode_ordinary speed in this process; "
          "process ratio = the same as whole processes, start-up included\n")
    print_table(rows)


if __name__ == "__main__":
    main()
