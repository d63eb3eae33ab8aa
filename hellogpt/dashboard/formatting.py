"""Number formatting shared by the live view, the plain log and the run summary (counts: `hellogpt.formatting`)."""

from __future__ import annotations

from typing import Any, Optional

# Counts are formatted the same everywhere (chat too); the dashboard finds every format here.
from hellogpt.formatting import MISSING, format_count  # noqa: F401


def format_loss(value: Optional[float]) -> str:
    return MISSING if value is None else f"{value:.4f}"


def format_learning_rate(value: Optional[float]) -> str:
    return MISSING if value is None else f"{value:.2e}"


def format_mfu(value: Optional[float]) -> str:
    """MFU is a fraction of peak FLOP/s; shown as a percentage."""
    return MISSING if value is None else f"{value * 100:.2f}%"


def mfu_basis(config: dict[str, Any]) -> str:
    """What MFU is measured against: the probed matmul peak, or the figure system.peak_flops sets (a spec sheet's,
    the basis nanoGPT and PaLM quote MFU on)."""
    return "spec peak" if (config.get("system") or {}).get("peak_flops") else "measured peak"


def format_rate(tokens_per_second: Optional[float]) -> str:
    return MISSING if tokens_per_second is None else f"{tokens_per_second:,.0f}"


def format_duration(seconds: Optional[float]) -> str:
    """Seconds as h:mm:ss (or m:ss under an hour)."""
    if seconds is None or seconds != seconds or seconds in (float("inf"), float("-inf")):
        return MISSING
    whole = int(round(max(seconds, 0.0)))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_bytes(value: Optional[float]) -> str:
    """Bytes in binary units: 1536 -> '1.5 KiB'."""
    if value is None:
        return MISSING
    for threshold, suffix in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if abs(value) >= threshold:
            return f"{value / threshold:.1f} {suffix}"
    return f"{value:.0f} B"
