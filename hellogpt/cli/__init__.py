"""The `hellogpt` Typer app: registers one thin module per subcommand.

Command modules import torch and transformers inside their functions only, so
`hellogpt --help` stays instant.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from hellogpt import __version__
from hellogpt.errors import INTERRUPTED_EXIT_CODE, USER_ERROR_EXIT_CODE, UserError, print_user_error


class _UserErrorGroup(TyperGroup):
    """Turns a `UserError` raised anywhere in a command into one line and exit code 2, and Ctrl-C into
    "interrupted" and exit code 130 (Typer would exit 130 with a blank line only)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as error:
            print_user_error(error)
            raise typer.Exit(USER_ERROR_EXIT_CODE) from None
        except KeyboardInterrupt:
            sys.stderr.write("\ninterrupted\n")
            raise typer.Exit(INTERRUPTED_EXIT_CODE) from None


app = typer.Typer(
    name="hellogpt",
    cls=_UserErrorGroup,
    help="Train, fine-tune and talk to GPT language models on your own texts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"hellogpt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Train, fine-tune and talk to GPT language models on your own texts."""


def _register_commands() -> None:
    from hellogpt.cli import chat, eval, export, info, prepare, serve, train, tune

    for module in (prepare, train, tune, chat, serve, eval, info, export):
        module.register(app)


_register_commands()


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        sys.exit(INTERRUPTED_EXIT_CODE)
