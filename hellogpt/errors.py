"""User-facing errors and the one place that turns them into output.

Core code raises `UserError` for anything a user can fix (a wrong key, a missing
file, a corrupt checkpoint); the CLI prints it as one line on stderr and exits
with code 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

USER_ERROR_EXIT_CODE = 2
INTERRUPTED_EXIT_CODE = 130


class UserError(Exception):
    """A problem the user can fix: the message names the thing and the fix."""


def print_user_error(error: UserError) -> None:
    """Print `error` as one plain line on stderr (no colour codes, no traceback)."""
    from rich.console import Console

    message = " ".join(str(error).split())
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]error:[/] {message}", markup=True)
    sys.stderr.flush()
