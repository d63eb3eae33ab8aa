"""Options shared by the commands that take a run config (train, tune, chat, info config).

The config layers (pydantic models, YAML) load when a command resolves its config, not when the CLI
starts: `hellogpt --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

if TYPE_CHECKING:
    from hellogpt.config.layers import Layer, ResolvedConfig

ProfileOption = Annotated[
    Optional[str],
    typer.Option("--profile", "-p", help="A built-in profile (see `hellogpt info profiles`) or a profile YAML file."),
]
ConfigOption = Annotated[
    Optional[list[Path]],
    typer.Option("--config", "-c", help="A config YAML file laid over the profile; repeatable; old flat Hello-GPT files work."),
]
SetOption = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", help="Override one value: section.key=value (YAML scalar); repeatable."),
]


def resolve_cli_config(
    profile: Optional[str],
    config_files: Optional[list[Path]],
    overrides: Optional[list[str]],
    defaults: Optional[Layer] = None,
) -> ResolvedConfig:
    """Resolve base -> profile -> files -> --set from the raw option values."""
    from hellogpt.config.layers import resolve_config

    return resolve_config(profile, config_files or [], overrides or [], defaults=defaults)
