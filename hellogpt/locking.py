"""One writer per file: a lock file beside it, held by a live process, released however that process ends.

The lock is `.NAME.lock` beside `NAME`, holding the holder's pid and host (for the message a second writer gets).
Who holds it is decided by the kernel (`flock` on the open lock file), not by reading the pid back: a holder that
is killed, even by SIGKILL, releases it at once, so a lock file left behind by a dead process is simply taken over,
and a recycled pid can never keep a lock alive. Where `fcntl` does not exist (Windows), the file is still written
but not enforced.
"""

from __future__ import annotations

import errno
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from hellogpt.errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

LOCK_SUFFIX = ".lock"
# A holder that releases between our open and our flock leaves us an unlinked file: try again, a few times.
MAX_LOCK_ATTEMPTS = 5
_BUSY_ERRNOS = frozenset({errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES})


def lock_path_for(path: Path) -> Path:
    """The hidden lock file beside `path`: NAME -> .NAME.lock."""
    path = Path(path)
    return path.parent / f".{path.name}{LOCK_SUFFIX}"


def process_is_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (one of another user counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


@contextmanager
def exclusive_lock(path: Path, busy_message: str) -> Iterator[Path]:
    """Hold the lock of `path` for the block; UserError(`busy_message` plus who holds it) if another process does.

    The lock file is removed when the block ends, by return, exception or Ctrl-C; the kernel releases it on a kill.
    """
    lock_path = lock_path_for(path)
    descriptor = _acquire(lock_path, busy_message)
    try:
        yield lock_path
    finally:
        # Unlink while still holding it: a waiter that opened the old file sees it vanish and starts over.
        with suppress(OSError):
            lock_path.unlink()
        os.close(descriptor)


def _acquire(lock_path: Path, busy_message: str) -> int:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(MAX_LOCK_ATTEMPTS):
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not _try_flock(descriptor):
                raise UserError(f"{busy_message}{_describe_holder(lock_path)}")
            if _is_current_file(descriptor, lock_path):
                _write_holder(descriptor)
                return descriptor
        except BaseException:
            os.close(descriptor)
            raise
        os.close(descriptor)  # the holder released and removed it between our open and flock: open the new one
    raise UserError(f"{busy_message} (its lock {lock_path} keeps changing hands)")


def _try_flock(descriptor: int) -> bool:
    if fcntl is None:
        return True
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in _BUSY_ERRNOS:
            return False
        raise
    return True


def _is_current_file(descriptor: int, lock_path: Path) -> bool:
    """Whether the file we locked is still the one at `lock_path` (not unlinked by a holder that just released)."""
    try:
        on_disk = os.stat(lock_path)
    except FileNotFoundError:
        return False
    held = os.fstat(descriptor)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _write_holder(descriptor: int) -> None:
    holder = json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode()
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, holder, 0)


def _describe_holder(lock_path: Path) -> str:
    try:
        holder = json.loads(lock_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        holder = None
    if not isinstance(holder, dict):
        return f" (it holds {lock_path})"
    host = holder.get("host")
    where = "" if host == socket.gethostname() else f" on {host}"
    return f" (process {holder.get('pid')}{where} holds {lock_path})"
