"""The probes' one cache: where it lives, and when a probe's result is not kept (other work took its cores)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from hellogpt.hardware.probes.cache import cache_file, probe_was_disturbed, read_json, write_json_atomically
from hellogpt.hardware.readings import CpuUseByOthers


def test_the_cache_lives_under_xdg_cache_home_and_survives_corruption(cache_home: Path) -> None:
    path = cache_file("probe.json")
    assert path == cache_home / "hellogpt" / "probe.json"
    assert read_json(path) == {}
    write_json_atomically(path, {"key": 1.5})
    assert read_json(path) == {"key": 1.5}
    path.write_text("[1, 2")
    assert read_json(path) == {}


def test_the_cores_other_processes_keep_busy_are_counted() -> None:
    """A reading of psutil counters (not a timing a probe decides by): one busy process shows as about a core."""
    spinner = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 5\nwhile time.time() < end: pass"])
    try:
        time.sleep(0.3)  # the spinner is past its start-up
        with CpuUseByOthers() as others:
            time.sleep(0.5)
    finally:
        spinner.kill()
        spinner.wait()
    assert 0.6 < others.cores < (os.cpu_count() or 1) + 0.1  # one core's worth, give or take the machine's own noise
    torch.set_num_threads(os.cpu_count() or 1)  # threads on every core: none free for others (restored after the test)
    assert probe_was_disturbed(others.cores)
    assert not probe_was_disturbed(0.1)
