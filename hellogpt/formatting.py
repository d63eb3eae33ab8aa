"""Number formatting shared by every place that shows counts: chat, the dashboard, the run summary."""

from __future__ import annotations

from typing import Optional

MISSING = "-"


def format_count(value: Optional[float]) -> str:
    """A count with a k/M/B suffix: 1234567 -> '1.23M'; None (not known yet) -> '-'."""
    if value is None:
        return MISSING
    for threshold, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / threshold:.2f}{suffix}"
    return f"{value:.0f}"
