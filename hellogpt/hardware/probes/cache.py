"""The one cache of probe results: `$XDG_CACHE_HOME/hellogpt/` (else `~/.cache/hellogpt/`), one JSON file per probe.

Probes measure once per machine, thread count, torch version and instruction set; a missing, corrupt or unwritable cache
only means measuring again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from hellogpt.hardware.probes import harness
from hellogpt.hardware.readings import cpu_kernels, cpu_model_name

# Cores that other work may keep busy during a CPU probe, beyond those torch's threads leave free, for its result
# to be cached: beside one busy process on two cores the rules probe read a third of the bandwidth and timed fp32
# decoding 8x slower than alone (bf16 then looked 3x faster). Such a measurement serves its run; the next measures again.
OTHERS_CORES_TOLERATED = 0.25


def cache_file(name: str) -> Path:
    """`$XDG_CACHE_HOME/hellogpt/NAME`, else `~/.cache/hellogpt/NAME`."""
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home) / "hellogpt" / name


def cpu_machine_key() -> str:
    """What a CPU measurement depends on: the chip, the threads torch uses, torch's kernels and the instructions
    they may use."""
    return f"cpu | {cpu_model_name()} x{torch.get_num_threads()} threads | torch {torch.__version__} {cpu_kernels()}"


def read_json(path: Path) -> dict[str, Any]:
    """A cache file's contents, or {} when it is missing or unreadable (it is re-measured, never fatal)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """Best effort: an unwritable cache only means measuring again next time."""
    from hellogpt.files import write_text_atomically

    try:
        write_text_atomically(path, json.dumps(data, indent=2, sort_keys=True))
    except OSError:
        pass


def probe_was_disturbed(cores_used_by_others: float) -> bool:
    """Whether other work took cores that a CPU probe's threads needed (more than the cores they leave free)."""
    free = max(0, (os.cpu_count() or 1) - torch.get_num_threads())
    return cores_used_by_others > free + OTHERS_CORES_TOLERATED


class CpuUseByOthers:
    """A context manager: how many cores, on average, other work kept busy while its block ran (the machine's busy
    time less this process's; in a VM the hypervisor's other guests count too, as steal time)."""

    cores: float = 0.0

    def __enter__(self) -> "CpuUseByOthers":
        import psutil

        self._process = psutil.Process()
        self._started = (harness.clock(), _busy_seconds(psutil.cpu_times()), _own_seconds(self._process))
        return self

    def __exit__(self, *_: object) -> None:
        import psutil

        started, machine, own = self._started
        wall = harness.clock() - started
        others = (_busy_seconds(psutil.cpu_times()) - machine) - (_own_seconds(self._process) - own)
        # The counters move in clock ticks (10 ms), each core's and this process's apart: within that, nothing is known.
        resolution = ((psutil.cpu_count() or 1) + 1) / _clock_ticks_per_second()
        self.cores = max(0.0, others - resolution) / wall if wall > 0 else 0.0


def _clock_ticks_per_second() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        return 100


def _busy_seconds(times: Any) -> float:
    return sum(getattr(times, field, 0.0) for field in ("user", "nice", "system", "irq", "softirq", "steal"))


def _own_seconds(process: Any) -> float:
    times = process.cpu_times()
    return times.user + times.system
