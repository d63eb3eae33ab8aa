"""Where checkpoints live: a bare name's file, the latest state beside the best model, and what a run name may be.

Pure path rules: nothing here opens a file's contents, so any module (the format, training's claim and resume, the
CLI) can use them without loading torch's pickles.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

CHECKPOINT_SUFFIX = ".pt"
DEFAULT_CHECKPOINTS_DIR = Path("checkpoints")
# Beside NAME.pt (the best model, or the latest with always_save_checkpoint), the resumable latest
# state when it is newer than the best: NAME.latest.pt.
LATEST_SUFFIX = ".latest"
# A run name becomes a folder under train.runs_dir: one plain path component.
_RUN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+=@-]*$")


def resolve_checkpoint_path(name_or_path: str, checkpoints_dir: Path = DEFAULT_CHECKPOINTS_DIR) -> Path:
    """A bare name means `checkpoints/<name>.pt`; a path (with a separator, or one that exists) is kept."""
    expanded = Path(name_or_path).expanduser()
    has_separator = os.sep in name_or_path or (os.altsep is not None and os.altsep in name_or_path)
    if has_separator or expanded.exists():
        return expanded
    file_name = name_or_path if name_or_path.endswith(CHECKPOINT_SUFFIX) else name_or_path + CHECKPOINT_SUFFIX
    return Path(checkpoints_dir) / file_name


def latest_checkpoint_path(checkpoint_path: Path) -> Path:
    """Where the resumable latest state goes beside the best model: NAME.pt -> NAME.latest.pt."""
    return checkpoint_path.with_name(f"{checkpoint_path.stem}{LATEST_SUFFIX}{CHECKPOINT_SUFFIX}")


def is_valid_run_name(name: str) -> bool:
    """One plain path component: letters, digits and `_ . + = @ -`, not starting with a dot."""
    return bool(_RUN_NAME.match(name)) and ".." not in name
