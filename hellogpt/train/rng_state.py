"""The random state `--resume` restores: the global RNGs and the batch sampler's, captured and put back.

What a checkpoint holds of them, and the checks it passes on load, is the format's
(`hellogpt.checkpoints.resume_state`); capturing and restoring them is training's.
"""

from __future__ import annotations

import random
from typing import Any, Mapping

import numpy as np
import torch

from hellogpt.checkpoints.resume_state import legacy_numpy_state, pcg64_from_state, python_state


def capture_rng_state() -> dict[str, Any]:
    """The global RNGs (python, numpy, torch CPU, CUDA) as plain values a weights-only load accepts."""
    version, internal_state, gauss_next = random.getstate()
    bit_generator, key, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    return {
        "python": {"version": version, "state": list(internal_state), "gauss_next": gauss_next},
        "numpy": {
            "bit_generator": str(bit_generator),
            "key": torch.from_numpy(key.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Put the global RNGs back where `capture_rng_state` found them (CUDA only when the device count matches)."""
    random.setstate(python_state(state["python"]))
    np.random.set_state(legacy_numpy_state(state["numpy"]))
    torch.set_rng_state(state["torch"])
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)


def generator_state(generator: np.random.Generator) -> dict[str, Any]:
    """A numpy Generator's state (e.g. the batch sampler's) as a plain dict for the checkpoint."""
    return dict(generator.bit_generator.state)


def generator_from_state(state: Mapping[str, Any]) -> np.random.Generator:
    """The batch sampler's generator, continuing where `generator_state` captured it (a PCG64 one only)."""
    return pcg64_from_state(state)
