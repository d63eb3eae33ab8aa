"""`hellogpt chat`: being written (owned by its issue's worker)."""

import typer


def register(app: typer.Typer) -> None:
    """Nothing registered yet."""
