"""Live readings, /proc/cpuinfo and `hellogpt info`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from typer.testing import CliRunner

from hellogpt.cli import app
from hellogpt.hardware.probes.cache import cpu_machine_key
from hellogpt.hardware.readings import describe_cpu, read_hardware_state


def test_hardware_state_reads_cpu_and_memory_without_blocking() -> None:
    state = read_hardware_state("cpu")
    assert state["ram_total_bytes"] >= state["ram_used_bytes"] > 0
    assert state["process_rss_bytes"] > 0 and state["cpu_percent"] >= 0


def test_the_cpu_description_names_the_model_and_its_vector_flags() -> None:
    described = describe_cpu()
    assert "; flags: " in described
    assert "sse2 " not in described + " "  # only the extensions that decide speed
    assert described.endswith(f"; torch kernels: {torch.backends.cpu.get_cpu_capability()}")


def test_a_run_held_to_fewer_instructions_says_so_and_keeps_its_own_measurements() -> None:
    """`ATEN_CPU_CAPABILITY` / `ONEDNN_MAX_CPU_ISA` make a chip run as an older one: its probes must not be
    mistaken for the chip's own (nor the reverse), and benchmark headers must show it."""
    script = "from hellogpt.hardware.probes.cache import cpu_machine_key; print(cpu_machine_key())"
    environment = {**os.environ, "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    limited = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True, check=True)
    key = limited.stdout.strip()
    assert key.endswith("DEFAULT ONEDNN_MAX_CPU_ISA=AVX2")
    assert key != cpu_machine_key()


def test_info_without_argument_describes_the_hardware(cache_home: Path) -> None:
    result = CliRunner().invoke(app, ["info", "--json"])
    assert result.exit_code == 0, result.output
    described = json.loads(result.output)
    assert described["torch"] == torch.__version__
    assert described["auto_device"] in {"cpu", "cuda", "mps"}
    assert "not measured yet" in described["cpu_rules"]
