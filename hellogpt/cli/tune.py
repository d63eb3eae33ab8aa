"""`hellogpt tune`: fine-tune the weights of one of our checkpoints (or a Hugging Face GPT-2) on a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hellogpt.cli.options import ConfigOption, ProfileOption, SetOption, resolve_cli_config
from hellogpt.cli.train import (
    CheckpointOption,
    DataOption,
    MaxTimeOption,
    NameOption,
    OverwriteOption,
    PlainOption,
    TensorBoardOption,
    checked_run_name,
    parse_duration,
    run_training,
)
from hellogpt.errors import UserError

# The training core (torch) and the config schema (pydantic) are imported inside the command: `--help` stays instant.


def register(app: typer.Typer) -> None:
    app.command("tune")(tune_command)


def tune_command(
    source: Annotated[
        Optional[str],
        typer.Option(
            "--from",
            help="Weights to start from: a checkpoint (name or path), or a Hugging Face model (gpt2, owner/name, a folder).",
            show_default=False,
        ),
    ] = None,
    profile: ProfileOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    data: DataOption = None,
    name: NameOption = None,
    max_time: MaxTimeOption = None,
    checkpoint: CheckpointOption = None,
    plain: PlainOption = False,
    tensorboard: TensorBoardOption = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the tuned checkpoint where it stopped.")] = False,
    overwrite: OverwriteOption = False,
    lora: Annotated[
        bool,
        typer.Option(
            "--lora",
            help="Train low-rank adapters only (the `lora` config section): the base stays frozen, in bf16/fp16 where "
            "the device has it; the checkpoint holds the adapters and a hashed reference to the base.",
        ),
    ] = False,
    gpt2base: Annotated[Optional[str], typer.Option("--gpt2base", hidden=True, help="The old tool's name for --from.")] = None,
) -> None:
    """Fine-tune a trained model on a dataset: fresh optimizer, tuning defaults, a new checkpoint.

    The architecture comes from the source; the config may change only its dropout.
    [dim]Examples: hellogpt tune --from edgar_poe.pt --profile poems | hellogpt tune --from gpt2 --profile gpt2-tune |
    hellogpt tune --from gpt2-xl --profile gpt2-tune --lora --set train.activation_checkpointing=true[/]
    """
    from hellogpt.train.claim import claimed_checkpoint
    from hellogpt.train.dataset import resolve_data_dir
    from hellogpt.train.tune import existing_checkpoint, load_tuning_source, tune_defaults, tuned_checkpoint_path

    source = source or gpt2base
    if not source:
        raise UserError("tune needs --from: a checkpoint (e.g. --from edgar_poe.pt) or a Hugging Face model (--from gpt2)")
    overrides = [*(set_ or []), *(["lora.enabled=true"] if lora else [])]
    resolved = resolve_cli_config(profile, config, overrides, defaults=tune_defaults(False))
    if resolved.config.lora.enabled:
        resolved = resolve_cli_config(profile, config, overrides, defaults=tune_defaults(True))
    max_seconds = parse_duration(max_time) if max_time else None
    data_dir = resolve_data_dir(resolved.config.data, data)
    out_dir = Path(resolved.config.train.out_dir)
    checkpoint_path = tuned_checkpoint_path(
        resolved, source, existing_checkpoint(source, out_dir), checkpoint or checked_run_name(name)
    )
    # Claimed before the source weights are loaded (or downloaded): a refusal costs nothing.
    with claimed_checkpoint(checkpoint_path, resume=resume, overwrite=overwrite):
        init = None if resume else load_tuning_source(source, out_dir, resolved.config)[0]
        run_training(
            resolved,
            data_dir,
            checkpoint_path,
            init=init,
            resume=resume,
            overwrite=overwrite,
            max_seconds=max_seconds,
            run_name=name,
            plain=plain,
            tensorboard=tensorboard,
        )
