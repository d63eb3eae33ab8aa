"""Atomic file writes: a temporary file beside the target, renamed onto it only when complete.

One implementation for checkpoints, run records, transcripts and caches, so an
interrupted write never leaves half a file under the real name.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Optional

# mkstemp creates files as 0600; a finished file should get the mode any other new file would.
_DEFAULT_FILE_MODE = 0o666
_FALLBACK_UMASK = 0o022


@contextmanager
def atomic_file(path: Path, mode: str = "wb", encoding: Optional[str] = None) -> Iterator[IO[Any]]:
    """Yield an open temporary file beside `path`; flushed, fsynced and renamed onto `path` if the block completes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, mode, encoding=encoding) as temp_file:
            yield temp_file
            temp_file.flush()
            os.fsync(temp_file.fileno())
        os.chmod(temp_name, _DEFAULT_FILE_MODE & ~current_umask())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def write_text_atomically(path: Path, text: str) -> None:
    """Write UTF-8 `text` to `path` atomically."""
    with atomic_file(path, "w", encoding="utf-8") as file:
        file.write(text)


def write_bytes_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_file(path, "wb") as file:
        file.write(data)


def current_umask() -> int:
    """The process umask, read without changing it (os.umask can only be read by setting it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    return _FALLBACK_UMASK


def _fsync_directory(folder: Path) -> None:
    """Make the rename itself durable (POSIX); skipped where directories cannot be opened."""
    if os.name != "posix":
        return
    try:
        directory = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
