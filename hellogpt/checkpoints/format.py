"""The checkpoint file: atomic save, safe load, and every field checked once into a typed `Checkpoint`.

A checkpoint is one `torch.save`d dict of tensors and plain Python values only, so that
`torch.load(weights_only=True)` can read it: opening a checkpoint never runs code.
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from hellogpt import __version__
from hellogpt.checkpoints.paths import (
    CHECKPOINT_SUFFIX,
    DEFAULT_CHECKPOINTS_DIR,
    is_valid_run_name,
    latest_checkpoint_path,
)
from hellogpt.checkpoints.resume_state import DamagedRngState, check_rng_state, check_sampler_state
from hellogpt.errors import UserError
from hellogpt.files import atomic_file
from hellogpt.hardware.devices import DTYPES_BY_NAME
from hellogpt.model.architectures import ARCHITECTURES
from hellogpt.model.base import GPT2_SMALL, GPTConfig

# Format 2 adds LoRA checkpoints (adapters plus a reference to their base); plain checkpoints are still
# written as format 1, so an older hellogpt reads them, and refuses a LoRA one with "upgrade".
CHECKPOINT_FORMAT_VERSION = 2
PLAIN_FORMAT_VERSION = 1
# Fields written only when set, so that a plain checkpoint holds what format 1 did (older readers skip `dtype`).
OPTIONAL_FIELDS = ("lora", "base", "dtype", "chat_template")
REQUIRED_KEYS = ("format_version", "model_args", "model")
# Types that torch.load(weights_only=True) rebuilds; checked by exact type (np.float64 subclasses float).
_PLAIN_TYPES = (type(None), bool, int, float, str, bytes, torch.dtype, torch.Size, torch.device)
# How many offending names an error shows before "...".
MAX_NAMES_IN_ERROR = 3


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint's contents, checked once on load: the rest of the code reads typed fields, never raw keys.

    `step`, `optimizer`, `rng` and `sampler` are set by training and make a checkpoint resumable;
    `pending_eval` says the run stopped on a step whose evaluation (or the final one) has not run yet.
    A LoRA checkpoint sets `lora` (rank, alpha, dropout, targets) and `base` (what the adapters were tuned on,
    with its sha256): `model` then holds only the adapters, and the base is loaded (and checked) to use it.
    `dtype` is the one training computed in ("bfloat16"); `--resume` reuses it (training's precision rule).
    `chat_template` (a Jinja string, as transformers stores it) makes the model a chat model everywhere.
    """

    model_args: GPTConfig
    model: dict[str, torch.Tensor]
    step: Optional[int] = None
    optimizer: Optional[dict[str, Any]] = None
    scaler: Optional[dict[str, Any]] = None
    train_loss: Optional[float] = None
    val_loss: Optional[float] = None
    best_val_loss: Optional[float] = None
    config: Optional[dict[str, Any]] = None
    tokenizer: Optional[dict[str, Any]] = None
    rng: Optional[dict[str, Any]] = None
    rank_rngs: Optional[list[dict[str, Any]]] = None
    sampler: Optional[dict[str, Any]] = None
    origin: Optional[dict[str, Any]] = None
    run_name: Optional[str] = None
    pending_eval: bool = False
    format_version: int = CHECKPOINT_FORMAT_VERSION
    hellogpt_version: Optional[str] = None
    lora: Optional[dict[str, Any]] = None
    base: Optional[dict[str, Any]] = None
    dtype: Optional[str] = None
    chat_template: Optional[str] = None

    @property
    def is_lora(self) -> bool:
        return self.lora is not None

    @property
    def resumable(self) -> bool:
        return self.step is not None and self.optimizer is not None and self.rng is not None

    def to_payload(self) -> dict[str, Any]:
        """The dict `torch.save` writes: tensors and plain values only."""
        payload = {field.name: getattr(self, field.name) for field in fields(self)}
        payload["model_args"] = self.model_args.to_dict()
        for name in OPTIONAL_FIELDS:
            if payload[name] is None:
                del payload[name]
        payload["format_version"] = CHECKPOINT_FORMAT_VERSION if self.is_lora else PLAIN_FORMAT_VERSION
        payload["hellogpt_version"] = __version__
        return payload

    @classmethod
    def from_payload(cls, payload: Any, path: Path) -> "Checkpoint":
        """Check every field's type once; a malformed file is a UserError naming the field."""
        _check_is_ours(path, payload)
        known = {field.name for field in fields(cls)}
        values = {key: value for key, value in payload.items() if key in known}
        try:
            values["model_args"] = _model_args(payload["model_args"])
            for name, kinds in _FIELD_TYPES.items():
                _check_field(name, values.get(name), kinds)
            values["model"] = _tensor_dict(payload["model"])
            _check_lora_fields(values.get("lora"), values.get("base"))
            _check_resume_state(values)
        except (_MalformedField, DamagedRngState) as problem:
            raise UserError(
                f"{path} is a damaged checkpoint: {problem}; use an earlier copy or retrain "
                "(`hellogpt info` on a good one shows what it holds)"
            ) from None
        for name in ("train_loss", "val_loss", "best_val_loss"):
            if values.get(name) is not None:
                values[name] = float(values[name])
        if values.get("run_name") is not None and not is_valid_run_name(values["run_name"]):
            raise UserError(
                f"{path} names its run {values['run_name']!r}, which is not a plain folder name "
                "(no '/', '\\' or '..'): it was edited or not written by hellogpt; resume it with --name NEW_NAME"
            )
        return cls(**values)

    def require_resumable(self, path: Path) -> None:
        """Resuming needs the training state, not only the weights."""
        if not self.resumable:
            raise UserError(
                f"{path} holds weights without the training state (step, optimizer, RNGs) that --resume needs: "
                f"start a new run from it with `hellogpt tune --from {path}`"
            )


class _MalformedField(Exception):
    pass


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "step": (int,),
    "optimizer": (dict,),
    "scaler": (dict,),
    "train_loss": (float, int),
    "val_loss": (float, int),
    "best_val_loss": (float, int),
    "config": (dict,),
    "tokenizer": (dict,),
    "rng": (dict,),
    "rank_rngs": (list,),
    "sampler": (dict,),
    "origin": (dict,),
    "run_name": (str,),
    "pending_eval": (bool,),
    "hellogpt_version": (str,),
    "lora": (dict,),
    "base": (dict,),
    "dtype": (str,),
    "chat_template": (str,),
}


def _check_lora_fields(lora: Optional[dict[str, Any]], base: Optional[dict[str, Any]]) -> None:
    """A LoRA checkpoint names its adapters' shape and a base with a kind, a location and a hash."""
    if lora is None and base is None:
        return
    if lora is None or base is None:
        raise _MalformedField("it has " + ("lora settings but no base" if base is None else "a base but no lora settings"))
    rank, targets = lora.get("rank"), lora.get("targets")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise _MalformedField(f"lora.rank is {rank!r}")
    if not isinstance(targets, list) or not targets or not all(isinstance(target, str) for target in targets):
        raise _MalformedField("lora.targets is not a list of layer names")
    for key in ("alpha", "dropout"):
        if isinstance(lora.get(key), bool) or not isinstance(lora.get(key), (int, float)):
            raise _MalformedField(f"lora.{key} is {lora.get(key)!r}")
    if base.get("kind") not in ("huggingface", "checkpoint") or not isinstance(base.get("source"), str):
        raise _MalformedField("base names no Hugging Face model or checkpoint")
    if not isinstance(base.get("sha256"), str):
        raise _MalformedField("base has no sha256")


def _check_resume_state(values: Mapping[str, Any]) -> None:
    """The RNGs and the sampler as training writes them, so that `--resume` restores them without a fault."""
    if values.get("rng") is not None:
        check_rng_state(values["rng"], "rng")
    for rank, state in enumerate(values.get("rank_rngs") or []):
        check_rng_state(state, f"rank_rngs[{rank}]")
    if values.get("sampler") is not None:
        check_sampler_state(values["sampler"])


def _check_field(name: str, value: Any, kinds: tuple[type, ...]) -> None:
    """None (absent) or one of `kinds`; bool is not an int here, and steps are not negative."""
    if value is None:
        return
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise _MalformedField(f"{name} is a {type(value).__name__}")
    if name == "step" and value < 0:
        raise _MalformedField(f"step is {value}")
    if name == "optimizer" and not {"state", "param_groups"} <= set(value):
        raise _MalformedField("optimizer lacks state/param_groups")
    if name == "tokenizer" and not isinstance(value.get("kind"), str):
        raise _MalformedField("tokenizer has no kind")
    if name == "dtype" and value not in DTYPES_BY_NAME:
        raise _MalformedField(f"dtype is {value!r}")


def _model_args(model_args: Any) -> GPTConfig:
    if not isinstance(model_args, dict):
        raise _MalformedField(f"model_args is a {type(model_args).__name__}")
    config = gpt_config_from_args(model_args)
    for name in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise _MalformedField(f"model_args.{name} is {value!r}")
    if config.n_embd % config.n_head:
        raise _MalformedField(f"model_args.n_embd {config.n_embd} is not a multiple of n_head {config.n_head}")
    return config


def _tensor_dict(model: Any) -> dict[str, torch.Tensor]:
    if not isinstance(model, dict) or not model:
        raise _MalformedField("model holds no weights")
    bad = [str(name) for name, tensor in model.items() if not isinstance(name, str) or not torch.is_tensor(tensor)]
    if bad:
        raise _MalformedField(f"model entries {', '.join(bad[:MAX_NAMES_IN_ERROR])} are not tensors")
    return dict(model)


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Write `checkpoint` to a temporary file beside `path`, fsync it, then rename: a crash never leaves half a file."""
    payload = checkpoint.to_payload()
    _check_weights_only_safe(payload, "payload")
    with atomic_file(Path(path), "wb", elsewhere="give another --checkpoint path (or set train.out_dir)") as temp_file:
        torch.save(payload, temp_file)


# What torch.load raises on damaged bytes (found by fuzzing truncated and mutated files); caught around the load only.
_DAMAGED_FILE_ERRORS = (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, KeyError, IndexError)


def load_checkpoint(path: Path, *, map_weights: bool = False) -> Checkpoint:
    """Load a checkpoint safely (no code runs) onto the CPU; UserError if it is missing, corrupt or not ours.

    `map_weights` memory-maps the tensors instead of reading them (private, copy-on-write): a model built on
    them by assignment holds its weights once, not twice.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a checkpoint file: give the .pt file inside it")
    if not path.exists():
        raise UserError(_not_found_message(path))
    if not os.access(path, os.R_OK):
        raise UserError(f"{path} cannot be read (permission denied): check the file's owner and mode")
    try:
        with warnings.catch_warnings():
            # torch warns about unusual pickle protocols before failing; the UserError below says it better.
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True, mmap=map_weights)
    except pickle.UnpicklingError as error:
        if "unsupported global" in str(error).lower():
            raise UserError(
                f"{path} was not written by hellogpt: it holds Python objects that a safe load refuses to run"
            ) from None
        raise UserError(_corrupt_message(path)) from None
    except _DAMAGED_FILE_ERRORS:
        raise UserError(_corrupt_message(path)) from None
    return Checkpoint.from_payload(payload, path)


@dataclass(frozen=True)
class SavedProgress:
    """How far the run saved in a file got, read without loading its weights."""

    step: Optional[int]
    best_val_loss: Optional[float]


def peek_progress(path: Path) -> Optional[SavedProgress]:
    """The step and best val loss saved in `path`, read through a memory map (no copy of the weights);
    None when unreadable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, *_DAMAGED_FILE_ERRORS):
        return None
    if not isinstance(payload, dict):
        return None
    step, best = payload.get("step"), payload.get("best_val_loss")
    return SavedProgress(
        step=step if isinstance(step, int) and not isinstance(step, bool) else None,
        best_val_loss=float(best) if isinstance(best, (int, float)) and not isinstance(best, bool) else None,
    )


def peek_step(path: Path) -> Optional[int]:
    """The step saved in `path` (see `peek_progress`); None when unreadable."""
    progress = peek_progress(path)
    return progress.step if progress is not None else None


def gpt_config_from_args(model_args: Mapping[str, Any]) -> GPTConfig:
    """GPTConfig from stored `model_args`; keys this version does not know are an error, not silently dropped,
    and a key it lacks reads as GPT-2 small's."""
    known = {field.name for field in fields(GPTConfig)}
    unknown = sorted(set(model_args) - known)
    if unknown:
        raise UserError(
            f"the checkpoint's model_args has keys this hellogpt does not know ({', '.join(unknown)}): upgrade hellogpt"
        )
    config = GPTConfig(**{**GPT2_SMALL.to_dict(), **model_args})
    if config.arch not in ARCHITECTURES:
        raise UserError(
            f"the checkpoint's architecture {config.arch!r} is not one this hellogpt knows "
            f"({', '.join(ARCHITECTURES)}): upgrade hellogpt"
        )
    return config


def _check_is_ours(path: Path, payload: Any) -> None:
    if not isinstance(payload, dict) or any(key not in payload for key in REQUIRED_KEYS):
        raise UserError(
            f"{path} was not written by hellogpt (no format_version/model_args/model in it): "
            "give a checkpoint from `hellogpt train`, or a Hugging Face model to `hellogpt tune --from`"
        )
    version = payload["format_version"]
    if not isinstance(version, int) or version > CHECKPOINT_FORMAT_VERSION:
        writer = payload.get("hellogpt_version", "a newer version")
        raise UserError(
            f"{path} uses checkpoint format {version} (written by hellogpt {writer}); this hellogpt {__version__} "
            f"reads format {CHECKPOINT_FORMAT_VERSION}: upgrade with `pip install -U hellogpt`"
        )


def _check_weights_only_safe(value: Any, where: str) -> None:
    """Fail at save time (a bug) rather than at load time (a user's broken checkpoint)."""
    if isinstance(value, torch.Tensor) or type(value) in _PLAIN_TYPES:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _check_weights_only_safe(key, f"{where} key")
            _check_weights_only_safe(item, f"{where}[{key!r}]")
        return
    if type(value) in (list, tuple):
        for index, item in enumerate(value):
            _check_weights_only_safe(item, f"{where}[{index}]")
        return
    raise TypeError(f"{where} is a {type(value).__name__}: checkpoints hold only tensors and plain Python values")


def _not_found_message(path: Path) -> str:
    latest = latest_checkpoint_path(path)
    if latest.is_file():
        return (
            f"no checkpoint at {path} yet (no evaluation has saved a best model), but {latest} holds the run's "
            f"latest state: continue training with --resume, or use it as it is with --checkpoint {latest}"
        )
    folder = path.parent
    hint = " (a bare name is looked up in checkpoints/)" if folder == DEFAULT_CHECKPOINTS_DIR else ""
    if folder.is_dir():
        available = sorted(candidate.name for candidate in folder.glob(f"*{CHECKPOINT_SUFFIX}"))
        if available:
            listing = ", ".join(available[:5]) + (" ..." if len(available) > 5 else "")
            return f"no checkpoint at {path}; {folder}/ has: {listing}{hint}"
    return f"no checkpoint at {path}{hint}: train one with `hellogpt train`, or give the checkpoint's path"


def _corrupt_message(path: Path) -> str:
    return (
        f"{path} is not a readable checkpoint (truncated or corrupt): "
        "use an earlier copy or retrain; `hellogpt info` on a good one shows what it holds"
    )
