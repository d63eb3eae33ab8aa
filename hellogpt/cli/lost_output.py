"""Output that outlives its terminal: a dropped ssh session must not turn a run's last lines into a crash.

Once a terminal hangs up, writing to it fails with EIO; writing to a pipe whose reader is gone fails with EPIPE.
A run stopped by SIGHUP still prints its last step, its checkpoint and how to resume, and an exception there
would end the process before the checkpoint is written. Inside `surviving_lost_output()`, a write or flush of
sys.stdout or sys.stderr that fails so points that stream's file descriptor at /dev/null (so that every later
write, the interpreter's last flush included, succeeds) and the text is dropped.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from typing import Any, Iterator, TextIO

# What writing to a hung-up terminal (EIO) or to a pipe nobody reads any more (EPIPE) fails with.
LOST_OUTPUT_ERRORS = frozenset({errno.EIO, errno.EPIPE})


class SurvivingStream:
    """A text stream that stops writing, silently, once its output is gone; otherwise the stream it wraps."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.lost = False

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as error:
            self._give_up_on(error)
            return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as error:
            self._give_up_on(error)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def _give_up_on(self, error: OSError) -> None:
        if error.errno not in LOST_OUTPUT_ERRORS:
            raise error
        self.lost = True
        with contextlib.suppress(OSError, ValueError):
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, self._stream.fileno())
            finally:
                os.close(null)
            # What the stream still buffers now goes to /dev/null, not to the next write's error.
            self._stream.flush()


@contextlib.contextmanager
def surviving_lost_output() -> Iterator[None]:
    """sys.stdout and sys.stderr survive a lost terminal inside; the streams that were there come back on exit."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = SurvivingStream(sys.stdout), SurvivingStream(sys.stderr)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
