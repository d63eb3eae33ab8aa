"""When a long step or evaluation reports its progress, so that a slow CPU never looks stuck."""

from __future__ import annotations

import time

# After this long into a step or evaluation, and then at most this often (read at call time: tests shorten them).
PROGRESS_AFTER_SECONDS = 2.0
PROGRESS_EVERY_SECONDS = 2.0


class ProgressClock:
    """Started with a step or evaluation; `due()` says when to send the next StepProgress."""

    def __init__(self) -> None:
        self.started = self.last_report = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def due(self) -> bool:
        now = time.perf_counter()
        if now - self.started < PROGRESS_AFTER_SECONDS or now - self.last_report < PROGRESS_EVERY_SECONDS:
            return False
        self.last_report = now
        return True
