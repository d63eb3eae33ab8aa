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
