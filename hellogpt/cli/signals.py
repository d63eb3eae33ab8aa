"""Ctrl-C and SIGTERM as a stop button: the first asks the run to stop after the step in flight, a second Ctrl-C
stops at once. The CLI owns the process's signals; the training core only offers `request_stop`."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any, Callable, Optional

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopOnSignals:
    """While inside, SIGINT and SIGTERM call `request_stop`; the handlers that were there come back on exit."""

    def __init__(self, request_stop: Callable[[], None]) -> None:
        self._request_stop = request_stop
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
        if self.requested and signal_number == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self._request_stop()
