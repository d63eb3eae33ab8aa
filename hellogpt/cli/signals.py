"""Ctrl-C, SIGTERM and SIGHUP as a stop button: the first asks the run to stop and save, a second Ctrl-C stops at
once (in a single process). The CLI owns the process's signals; the training core only offers `request_stop`.

SIGHUP is what a dropped ssh session sends: the run saves as for Ctrl-C (its output may fail from then on, which
`lost_output.py` makes harmless). A torchrun rank never stops at once: alone, it would leave the other ranks
waiting in a collective; torchrun itself kills every rank 30 s after forwarding the signal.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any, Callable, Optional

# SIGHUP does not exist on Windows.
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class StopOnSignals:
    """While inside, the STOP_SIGNALS call `request_stop`; the handlers that were there come back on exit.
    `second_ctrl_c_aborts`: a second SIGINT raises KeyboardInterrupt (not in a torchrun rank)."""

    def __init__(self, request_stop: Callable[[], None], second_ctrl_c_aborts: bool = True) -> None:
        self._request_stop = request_stop
        self._second_ctrl_c_aborts = second_ctrl_c_aborts
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopOnSignals":
        # Handlers can only be set from the main thread; elsewhere (a test's thread) the defaults stay.
        if threading.current_thread() is threading.main_thread():
            for signal_number in STOP_SIGNALS:
                self._previous[signal_number] = signal.signal(signal_number, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signal_number, handler in self._previous.items():
            signal.signal(signal_number, handler)
        self._previous.clear()

    def _handle(self, signal_number: int, frame: Optional[FrameType]) -> None:
        if self.requested and signal_number == signal.SIGINT and self._second_ctrl_c_aborts:
            raise KeyboardInterrupt
        self.requested = True
        self._request_stop()
