"""Writing files safely: a temporary file renamed into place, fsync, and one line when the disk refuses.

One implementation for checkpoints, datasets, exports, run records, transcripts and caches, so an
interrupted write never leaves half a file under the real name, and a full disk, a read-only file
system or a missing permission reads as one line naming the file instead of a traceback.
"""

from __future__ import annotations

import errno
import glob
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any, Optional

from hellogpt.errors import UserError
from hellogpt.locking import process_is_alive

DEFAULT_ELSEWHERE = "write elsewhere"
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
PERMISSION_ERRNOS = frozenset({errno.EACCES, errno.EPERM})
NOT_A_FOLDER_ERRNOS = frozenset({errno.ENOTDIR, errno.EEXIST})
BYTES_PER_MB = 1_000_000
# Libraries wrap a failed write in their own error (torch.save raises RuntimeError with the OSError as its
# context); this is how many wrappers deep the OSError is looked for.
MAX_WRAPPED_ERRORS = 8
# Random hex digits in a temporary file's name, after the writer's pid.
TEMP_SUFFIX_DIGITS = 8


class FileWriteError(UserError, OSError):
    """A write the system refused, as one line for the user; still an OSError, so callers that treat a
    failed write as a soft failure (a chat /save, a cache file) keep working."""

    def __init__(self, message: str, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror, cause.filename)
        self.message = message

    def __str__(self) -> str:
        return self.message


def open_for_writing(path: Path, mode: str = "wb", encoding: Optional[str] = None) -> IO[Any]:
    """Open `path` for writing. Every file hellogpt writes is opened here: the one seam where tests make the disk
    fill up. Call it through this module (`files.open_for_writing`) so that a replaced seam is seen."""
    return open(path, mode, encoding=encoding)


@contextmanager
def new_file(
    path: Path,
    mode: str = "wb",
    encoding: Optional[str] = None,
    *,
    shown_as: Optional[Path] = None,
    elsewhere: str = DEFAULT_ELSEWHERE,
) -> Iterator[IO[Any]]:
    """Create `path` (it must not exist) and yield it; flushed and fsynced when the block completes, removed when
    it fails. A failed write becomes a `FileWriteError` naming `shown_as` (the name the user knows) or `path`."""
    path = Path(path)
    try:
        file = open_for_writing(path, mode.replace("w", "x"), encoding)
    except OSError as error:
        raise write_error(error, shown_as or path, elsewhere) from None
    try:
        with file:
            yield file
            file.flush()
            os.fsync(file.fileno())
    except BaseException as error:
        with suppress(OSError):
            path.unlink()
        os_error = os_error_behind(error)
        if os_error is None:
            raise
        raise write_error(os_error, shown_as or path, elsewhere) from None


@contextmanager
def atomic_file(
    path: Path, mode: str = "wb", encoding: Optional[str] = None, *, elsewhere: str = DEFAULT_ELSEWHERE
) -> Iterator[IO[Any]]:
    """Yield an open temporary file beside `path`; flushed, fsynced and renamed onto `path` if the block completes.

    On any failure the temporary file is removed and `path` is left as it was; a failed write (full disk,
    read-only, permission) is raised as a `FileWriteError` naming `path`. The block should only write the file.
    """
    path = Path(path)
    temp_path = temporary_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with new_file(temp_path, mode, encoding, shown_as=path, elsewhere=elsewhere) as temp_file:
            yield temp_file
        os.replace(temp_path, path)
    except BaseException as error:
        with suppress(OSError):
            temp_path.unlink()
        os_error = os_error_behind(error)
        if os_error is None:
            raise
        raise write_error(os_error, path, elsewhere) from None
    fsync_directory(path.parent)


def write_text_atomically(path: Path, text: str, *, elsewhere: str = DEFAULT_ELSEWHERE) -> None:
    """Write UTF-8 `text` to `path` atomically."""
    with atomic_file(path, "w", encoding="utf-8", elsewhere=elsewhere) as file:
        file.write(text)


def write_bytes_atomically(path: Path, data: bytes, *, elsewhere: str = DEFAULT_ELSEWHERE) -> None:
    """Write `data` to `path` atomically."""
    with atomic_file(path, "wb", elsewhere=elsewhere) as file:
        file.write(data)


def temporary_path(path: Path) -> Path:
    """A fresh hidden name beside `path` (same file system, so the final rename is atomic): .NAME.PID.HEX.tmp."""
    path = Path(path)
    return path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:TEMP_SUFFIX_DIGITS]}.tmp"


def remove_stale_temporary_files(path: Path) -> list[Path]:
    """Remove the temporary files of `path` that a killed write left behind (their process, the PID in the name,
    is gone); those of a live process are left alone. Returns what was removed."""
    path = Path(path)
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)\.[0-9a-f]{{{TEMP_SUFFIX_DIGITS}}}\.tmp$")
    removed = []
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        match = pattern.match(candidate.name)
        if match is None or process_is_alive(int(match.group(1))):
            continue
        with suppress(FileNotFoundError):
            candidate.unlink()
            removed.append(candidate)
    return removed


def os_error_behind(error: BaseException) -> Optional[OSError]:
    """The OSError itself, or the one a library's RuntimeError wraps (torch.save after a failed write); else None."""
    current: Optional[BaseException] = error
    for _ in range(MAX_WRAPPED_ERRORS):
        if isinstance(current, OSError):
            return current
        if not isinstance(current, RuntimeError):
            return None
        current = current.__cause__ or current.__context__
    return None


def write_error(error: OSError, path: Path, elsewhere: str = DEFAULT_ELSEWHERE) -> FileWriteError:
    """One line for a failed write of `path`: what the system said and what to do (`elsewhere`: where else to write)."""
    if isinstance(error, FileWriteError):
        return error
    path = Path(path)
    folder = _nearest_existing_folder(path.parent)
    if error.errno in NO_SPACE_ERRNOS:
        what = "no space left on device" if error.errno == errno.ENOSPC else "disk quota exceeded"
        return FileWriteError(f"{what} writing {path}: {_free_space(folder)}; free some space or {elsewhere}", error)
    if error.errno in PERMISSION_ERRNOS:
        return FileWriteError(
            f"cannot write {path}: permission denied; check the permissions of {folder} or {elsewhere}", error
        )
    if error.errno == errno.EROFS:
        return FileWriteError(f"cannot write {path}: {folder} is on a read-only file system; {elsewhere}", error)
    if error.errno in NOT_A_FOLDER_ERRNOS:
        return FileWriteError(f"cannot write {path}: a part of that path is a file, not a folder; {elsewhere}", error)
    reason = (error.strerror or str(error) or type(error).__name__).lower()
    return FileWriteError(f"cannot write {path}: {reason}; {elsewhere}", error)


def fsync_directory(folder: Path) -> None:
    """Make renames and new files in `folder` durable (POSIX); skipped where directories cannot be opened."""
    if os.name != "posix":
        return
    try:
        directory = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(directory)
    except OSError:
        pass  # some file systems cannot fsync a directory; the data itself was fsynced
    finally:
        os.close(directory)


def _nearest_existing_folder(folder: Path) -> Path:
    """`folder`, or its closest existing parent: where a failed write would have gone."""
    for candidate in (folder, *folder.parents):
        if candidate.is_dir():
            return candidate
    return folder


def _free_space(folder: Path) -> str:
    """'N MB free on MOUNT' for the disk that holds `folder`."""
    try:
        free_bytes = shutil.disk_usage(folder).free
    except OSError:
        return "free space unknown"
    return f"{free_bytes / BYTES_PER_MB:,.1f} MB free on {_mount_point(folder)}"


def _mount_point(folder: Path) -> Path:
    path = folder.resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path
