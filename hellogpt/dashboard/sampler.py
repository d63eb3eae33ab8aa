"""Hardware readings taken in a background thread, so the training step never waits for them."""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional

HardwareReader = Callable[[str], dict[str, Any]]
SAMPLE_INTERVAL_SECONDS = 1.0


def default_hardware_reader() -> Optional[HardwareReader]:
    """`hellogpt.hardware.readings.read_hardware_state`, or None when it cannot be imported."""
    try:
        from hellogpt.hardware.readings import read_hardware_state
    except ImportError:
        return None
    return read_hardware_state


class HardwareSampler:
    """Calls `reader(device)` every `interval` seconds on a daemon thread; `latest` is the newest reading."""

    def __init__(self, device: str, reader: Optional[HardwareReader], interval: float = SAMPLE_INTERVAL_SECONDS) -> None:
        self.device = device
        self.reader = reader
        self.interval = interval
        self.latest: Optional[dict[str, Any]] = None
        self.error: Optional[str] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        if self.reader is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="hellogpt-hardware-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self.interval)
            self._thread = None

    def _run(self) -> None:
        while True:
            try:
                self.latest = dict(self.reader(self.device))  # type: ignore[misc]
                self.error = None
            except Exception as error:  # a failing sensor must never stop training
                self.error = f"{type(error).__name__}: {error}"
            if self._stop.wait(self.interval):
                return
