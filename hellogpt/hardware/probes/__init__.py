"""Speed probes: each times something on this machine to pick a speed-only setting, never a number a run computes.

Every probe times through one harness (`harness`: alternating rounds, medians, one clock) and keeps its results in
one cache (`cache`). `system.measure: off` (or `HELLOGPT_MEASURE=off`, which the tests and CI set) replaces every
probe by its fixed rule and times nothing at all:

- `packing`: whether bf16 CPU weights are prepacked for oneDNN. Off: never packed.
- `peak`: the peak FLOP/s that MFU divides by. Off: `system.peak_flops`, else no MFU.
- `threads`: whether decoding runs on all of torch's threads or on one. Off: torch's threads as they are (one per
  physical core unless OMP_NUM_THREADS says otherwise).
- `layout`: which batch-invariant row layout the server's step uses. Off: the first candidate (one product padded
  to the fewest rows that keep rows alike, else one-row products).
"""

from __future__ import annotations

import os
from typing import Literal, Optional

Measure = Literal["auto", "off"]
# Set to `off` to keep every probe to its rule whatever the config says (the test suite and CI do).
MEASURE_ENV = "HELLOGPT_MEASURE"


def measuring(setting: Optional[str] = None) -> bool:
    """Whether probes may time anything: `system.measure` (None: auto), unless `HELLOGPT_MEASURE=off`."""
    if os.environ.get(MEASURE_ENV, "").strip().lower() == "off":
        return False
    return setting != "off"
