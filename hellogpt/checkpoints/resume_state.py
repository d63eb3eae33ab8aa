"""The random state a resumable checkpoint holds, checked on load: the global RNGs and the batch sampler's.

A checkpoint is a file from anywhere: its RNG state is checked, part by part, against what training writes
(`hellogpt.train.rng_state`), when the checkpoint is loaded. Each part is also tried on a throwaway generator of
its kind, so that restoring it later cannot fail (a wrong-size torch state, a short numpy key) or read past a
key (numpy takes any position), and a name from the file never picks which class gets built. Capturing and
restoring the RNGs is training's; this module owns only the shape on disk.
"""

from __future__ import annotations

import random
from typing import Any, Mapping

import numpy as np
import torch

# Python's Mersenne Twister: 624 words and the position in them.
PYTHON_STATE_LENGTH = 625
# numpy's legacy global generator (np.random.get_state) and its key length.
LEGACY_BIT_GENERATOR = "MT19937"
MT19937_KEY_WORDS = 624
# The batch sampler is np.random.default_rng's generator; no other is ever written or built.
SAMPLER_BIT_GENERATOR = "PCG64"
SAMPLER_KIND = "numpy"
# torch's CUDA generator state: its Philox seed and offset, 8 bytes each.
CUDA_STATE_BYTES = 16
_WORD = 2**32
_PCG64_WORD = 2**128


class DamagedRngState(ValueError):
    """What is wrong with a checkpoint's random state, for the one-line "damaged checkpoint" error."""


def check_rng_state(state: Any, where: str) -> None:
    """DamagedRngState unless `state` is what `capture_rng_state` writes and each part restores."""
    _require(isinstance(state, dict), f"{where} is not a dict")
    _check_python_state(state.get("python"), f"{where}.python")
    _check_numpy_state(state.get("numpy"), f"{where}.numpy")
    _check_torch_state(state.get("torch"), f"{where}.torch")
    cuda = state.get("cuda", [])
    _require(isinstance(cuda, list), f"{where}.cuda is not a list")
    for index, device_state in enumerate(cuda):
        _require(
            _is_byte_tensor(device_state) and device_state.numel() == CUDA_STATE_BYTES,
            f"{where}.cuda[{index}] is not a {CUDA_STATE_BYTES}-byte CUDA generator state",
        )


def check_sampler_state(sampler: Any) -> None:
    """DamagedRngState unless `sampler` holds one PCG64 state per rank of the run that wrote it."""
    _require(isinstance(sampler, dict) and _is_text(sampler.get("kind"), SAMPLER_KIND), "sampler is not a numpy sampler")
    world_size, states = sampler.get("world_size"), sampler.get("states")
    _require(_is_int(world_size) and world_size >= 1, f"sampler.world_size is {world_size!r}")
    _require(isinstance(states, list) and len(states) == world_size, f"sampler.states is not {world_size} states")
    for index, state in enumerate(states):
        _check_pcg64_state(state, f"sampler.states[{index}]")


def _check_python_state(state: Any, where: str) -> None:
    _require(isinstance(state, dict), f"{where} is not a dict")
    words, gauss_next = state.get("state"), state.get("gauss_next")
    _require(_is_int(state.get("version")), f"{where}.version is not an int")
    _require(
        isinstance(words, list) and len(words) == PYTHON_STATE_LENGTH and all(map(_is_int, words)),
        f"{where}.state is not {PYTHON_STATE_LENGTH} ints",
    )
    _require(gauss_next is None or type(gauss_next) is float, f"{where}.gauss_next is not a float")
    _require_restores(lambda: random.Random().setstate(python_state(state)), where)


def _check_numpy_state(state: Any, where: str) -> None:
    _require(isinstance(state, dict), f"{where} is not a dict")
    _require(_is_text(state.get("bit_generator"), LEGACY_BIT_GENERATOR), f"{where}.bit_generator is not {LEGACY_BIT_GENERATOR}")
    key = state.get("key")
    _require(
        torch.is_tensor(key) and key.dtype == torch.int64 and tuple(key.shape) == (MT19937_KEY_WORDS,)
        and bool(((key >= 0) & (key < _WORD)).all()),
        f"{where}.key is not {MT19937_KEY_WORDS} 32-bit words",
    )
    position = state.get("position")
    _require(_is_int(position) and 0 <= position <= MT19937_KEY_WORDS, f"{where}.position is {position!r}")
    _require(_is_int(state.get("has_gauss")) and state["has_gauss"] in (0, 1), f"{where}.has_gauss is not 0 or 1")
    _require(type(state.get("cached_gaussian")) in (float, int), f"{where}.cached_gaussian is not a number")
    _require_restores(lambda: np.random.RandomState().set_state(legacy_numpy_state(state)), where)


def _check_torch_state(state: Any, where: str) -> None:
    _require(_is_byte_tensor(state), f"{where} is not a byte tensor")
    _require_restores(lambda: torch.Generator().set_state(state), where)


def _check_pcg64_state(state: Any, where: str) -> None:
    _require(isinstance(state, dict), f"{where} is not a dict")
    _require(_is_text(state.get("bit_generator"), SAMPLER_BIT_GENERATOR), f"{where}.bit_generator is not {SAMPLER_BIT_GENERATOR}")
    inner = state.get("state")
    _require(
        isinstance(inner, dict) and all(_is_int(inner.get(name)) and 0 <= inner[name] < _PCG64_WORD for name in ("state", "inc")),
        f"{where}.state is not two 128-bit words",
    )
    _require(_is_int(state.get("has_uint32")) and state["has_uint32"] in (0, 1), f"{where}.has_uint32 is not 0 or 1")
    uinteger = state.get("uinteger")
    _require(_is_int(uinteger) and 0 <= uinteger < _WORD, f"{where}.uinteger is not a 32-bit word")
    _require_restores(lambda: pcg64_from_state(state), where)


def python_state(state: Mapping[str, Any]) -> tuple[Any, ...]:
    """The tuple `random.setstate` takes, from the stored dict."""
    return state["version"], tuple(state["state"]), state["gauss_next"]


def legacy_numpy_state(state: Mapping[str, Any]) -> tuple[Any, ...]:
    """The tuple `np.random.set_state` takes, from the stored dict (the key as uint32 words)."""
    key = np.asarray(state["key"].numpy() if torch.is_tensor(state["key"]) else state["key"])
    return state["bit_generator"], key.astype(np.uint32), state["position"], state["has_gauss"], state["cached_gaussian"]


def pcg64_from_state(state: Mapping[str, Any]) -> np.random.Generator:
    """A numpy Generator that continues exactly where the stored PCG64 state was captured (no other kind is built)."""
    if not _is_text(state.get("bit_generator"), SAMPLER_BIT_GENERATOR):
        raise DamagedRngState(f"the sampler's generator is {state.get('bit_generator')!r}, not {SAMPLER_BIT_GENERATOR}")
    bit_generator = np.random.PCG64()
    bit_generator.state = dict(state)
    return np.random.Generator(bit_generator)


def _require_restores(restore: Any, where: str) -> None:
    """Run `restore` on a throwaway generator: what it refuses, restoring the real one would refuse too."""
    try:
        restore()
    except (ValueError, TypeError, KeyError, OverflowError, RuntimeError):
        raise DamagedRngState(f"{where} does not restore") from None


def _require(condition: bool, problem: str) -> None:
    if not condition:
        raise DamagedRngState(problem)


def _is_int(value: Any) -> bool:
    return type(value) is int


def _is_text(value: Any, expected: str) -> bool:
    return isinstance(value, str) and value == expected


def _is_byte_tensor(value: Any) -> bool:
    return torch.is_tensor(value) and value.dtype == torch.uint8 and value.dim() == 1
