"""Stop strings over streamed text: cut the reply where one appears, and never show part of one.

Text arrives in pieces, so a stop string may straddle two of them: the matcher holds back the
longest tail that could still grow into a stop string and releases it once it cannot.
"""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    """Feeds text pieces through; `push` returns what is safe to show and whether a stop string was reached."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(stop for stop in stops if stop)
        self._held = ""
        self.stopped = False

    def push(self, piece: str) -> str:
        """The text that can be shown now; after a stop string, nothing more (the stop string itself is never shown)."""
        if not self._stops or self.stopped:
            return "" if self.stopped else piece
        text = self._held + piece
        cut = min((index for index in (text.find(stop) for stop in self._stops) if index >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return text[:cut]
        keep = self._longest_partial_stop(text)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        """What was held back, once the text has ended without completing a stop string."""
        held, self._held = ("" if self.stopped else self._held), ""
        return held

    def _longest_partial_stop(self, text: str) -> int:
        """Length of the longest tail of `text` that is a proper prefix of a stop string."""
        longest = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:length]):
                    longest = length
                    break
        return longest
