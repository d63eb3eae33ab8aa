"""A private probe cache for every hardware test: no test reads or writes the user's ~/.cache/hellogpt."""

from __future__ import annotations

from pathlib import Path

import pytest

from hellogpt.hardware import peak, rules
from hellogpt.hardware.readings import CpuUseByOthers


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path


class _QuietMachine(CpuUseByOthers):
    def __exit__(self, *_: object) -> None:
        self.cores = 0.0


@pytest.fixture
def quiet_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Probes see no other work on the machine, whatever else runs beside the tests: their results are cached."""
    monkeypatch.setattr(rules, "CpuUseByOthers", _QuietMachine)
    monkeypatch.setattr(peak, "CpuUseByOthers", _QuietMachine)
