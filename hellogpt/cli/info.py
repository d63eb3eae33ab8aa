"""`hellogpt info`: hardware, a dataset, a checkpoint, a run, the profiles or a resolved config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from hellogpt.cli.options import ConfigOption, ProfileOption, SetOption, resolve_cli_config
from hellogpt.errors import UserError

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object, for scripts.")]

def register(app: typer.Typer) -> None:
    app.command("info")(info)


def info(
    target: Annotated[
        Optional[str],
        typer.Argument(
            help="Empty = hardware; a dataset folder, a checkpoint (name or path) or a run folder; "
            "'config' = the resolved config; 'profiles' = the built-in profiles.",
            show_default=False,
        ),
    ] = None,
    profile: ProfileOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show what hellogpt sees: hardware, datasets, checkpoints, runs, profiles, resolved configs.

    [dim]Examples: hellogpt info | hellogpt info data/poems | hellogpt info quickstart.pt |
    hellogpt info config --profile edgar_poe --set optim.learning_rate=3e-4[/]
    """
    if target is None:
        from hellogpt.hardware.report import describe_hardware

        _show(describe_hardware(), "Hardware", as_json)
    elif target == "config":
        _show_config(profile, config, set_, as_json)
    elif target == "profiles":
        _show_profiles(as_json)
    else:
        _show_target(target, as_json)


def _show_config(profile: Optional[str], config: Optional[list[Path]], set_: Optional[list[str]], as_json: bool) -> None:
    """Print the resolved config as YAML, each value with the layer it came from."""
    from hellogpt.config.layers import config_as_yaml

    resolved = resolve_cli_config(profile, config, set_)
    if as_json:
        payload = {"config": resolved.config.model_dump(mode="json"), "provenance": resolved.provenance}
        typer.echo(json.dumps(payload, indent=2))
        return
    typer.echo(config_as_yaml(resolved), nl=False)


def _show_profiles(as_json: bool) -> None:
    from hellogpt.config.layers import builtin_profile_names, load_profile

    rows = {name: _profile_summary(load_profile(name).values) for name in builtin_profile_names()}
    _show(rows, "Profiles", as_json)


def _profile_summary(values: dict[str, dict[str, Any]]) -> str:
    model = values.get("model", {})
    data = values.get("data", {})
    shape = f"{model['n_layer']}x{model['n_embd']}" if "n_layer" in model and "n_embd" in model else "from base or --from"
    return f"model {shape}, dataset {data.get('dataset', '-')}, tokenizer {data.get('tokenizer', 'gpt2')}"


def _show_target(target: str, as_json: bool) -> None:
    """Dispatch on what `target` is: a dataset folder, a run folder, or a checkpoint."""
    path = Path(target)
    if path.is_dir() and ((path / "meta.json").exists() or (path / "train.bin").exists()):
        from hellogpt.data.loader import describe_dataset

        _show(describe_dataset(path), f"Dataset {path}", as_json)
        return
    if path.is_dir() and (path / "metrics.jsonl").exists():
        from hellogpt.dashboard.records import describe_run

        _show(describe_run(path), f"Run {path}", as_json)
        return
    if path.is_dir():
        raise UserError(f"{path} is neither a dataset (no meta.json or train.bin) nor a run folder (no metrics.jsonl)")
    from hellogpt.checkpoints.paths import resolve_checkpoint_path
    from hellogpt.cli.checkpoint_info import describe_checkpoint

    checkpoint_path = resolve_checkpoint_path(target)
    _show(describe_checkpoint(checkpoint_path), f"Checkpoint {checkpoint_path}", as_json)


def _show(data: dict[str, Any], title: str, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in _flatten(data).items():
        table.add_row(key, _format_value(value))
    Console().print(table)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections as dotted keys (`config.model.n_layer`), so a table row holds one value."""
    rows: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows.update(_flatten(value, f"{name}."))
        else:
            rows[name] = value
    return rows


def _format_value(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_format_value(item) for item in value) if value else "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)
