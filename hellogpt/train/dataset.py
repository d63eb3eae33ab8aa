"""Which dataset folder a run trains on, and preparing it when the config says where its text comes from."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from hellogpt.config.schema import DataConfig
from hellogpt.data.prepare import prepare_dataset
from hellogpt.errors import UserError

DATA_ROOT = Path("data")


def resolve_data_dir(data: DataConfig, data_option: Optional[Path] = None) -> Path:
    """`--data DIR` wins; else `data.dataset` as a path when it exists; else `data/<dataset>`."""
    if data_option is not None:
        return Path(data_option)
    if not data.dataset:
        raise UserError("no dataset: pass --data DIR (a folder from hellogpt prepare) or --set data.dataset=NAME")
    as_path = Path(data.dataset).expanduser()
    if as_path.exists():
        return as_path
    return DATA_ROOT / data.dataset


def dataset_exists(data_dir: Path) -> bool:
    """A prepared folder (meta.json) or one of the old tool (train.bin + validate.bin)."""
    return (data_dir / "meta.json").is_file() or all((data_dir / name).is_file() for name in ("train.bin", "validate.bin"))


def prepare_missing_dataset(
    data: DataConfig,
    data_dir: Path,
    progress: Optional[Callable[[int, int], None]] = None,
    block_size: Optional[int] = None,
) -> bool:
    """Prepare `data.source` into `data_dir` when the folder is missing; True when it did. Conversations are cut
    into rows of the model's `block_size` (the schema's default when not given)."""
    if dataset_exists(data_dir):
        return False
    if not data.source:
        raise UserError(missing_dataset_message(data, data_dir))
    prepare_dataset(
        [data.source],
        data_dir,
        tokenizer=data.tokenizer,
        val_fraction=data.val_fraction,
        progress=progress,
        **({"block_size": block_size} if block_size is not None else {}),
    )
    return True


def missing_dataset_message(data: DataConfig, data_dir: Path) -> str:
    """One line naming the missing folder and the exact command that creates it."""
    tokenizer_flag = f" --tokenizer {data.tokenizer}" if data.tokenizer != "gpt2" else ""
    return (
        f"dataset {data_dir} not found: prepare it first with "
        f"`hellogpt prepare PATH/TO/TEXTS --out {data_dir}{tokenizer_flag}` (or pass --data DIR)"
    )
