"""`hellogpt tune`: fine-tune the weights of one of our checkpoints (or a Hugging Face GPT-2) on a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from hellogpt.cli.options import ConfigOption, ProfileOption, SetOption, resolve_cli_config
from hellogpt.cli.train import (
    CheckpointOption,
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
    data: Annotated[
        Optional[Path],
        typer.Option(
            "--data",
            "-d",
            help="Dataset folder from `hellogpt prepare`, or conversations (a .jsonl file or a folder of them), "
            "prepared with the model's tokenizer into data/<name>; default: data.dataset, else data/<dataset>.",
        ),
    ] = None,
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
    chats = data if data is not None and _are_conversations(data) else None
    if chats is not None:
        data_dir = chats_data_dir(chats)
    out_dir = Path(resolved.config.train.out_dir)
    checkpoint_path = tuned_checkpoint_path(
        resolved, source, existing_checkpoint(source, out_dir), checkpoint or checked_run_name(name)
    )
    # Claimed before the source weights are loaded (or downloaded): a refusal costs nothing.
    with claimed_checkpoint(checkpoint_path, resume=resume, overwrite=overwrite):
        init = None if resume else load_tuning_source(source, out_dir, resolved.config)[0]
        if chats is not None:
            _prepare_chats(chats, data_dir, init, checkpoint_path, resolved.config.data.val_fraction)
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


def chats_data_dir(chats: Path) -> Path:
    """Where `tune --data CHATS` (a .jsonl file or a folder of them) prepares them: data/<file stem or folder name>."""
    from hellogpt.train.dataset import DATA_ROOT

    return DATA_ROOT / (chats.stem if chats.is_file() else chats.name)


def _are_conversations(data: Path) -> bool:
    """`--data` names conversations to prepare (a .jsonl file, a folder of .jsonl files), not a prepared folder."""
    from hellogpt.data.chats import TEXT_GLOB, is_chat_source
    from hellogpt.train.dataset import dataset_exists

    return not dataset_exists(data) and is_chat_source(str(data), TEXT_GLOB, ())


def _prepare_chats(
    chats: Path, data_dir: Path, init: Optional[dict[str, Any]], checkpoint_path: Path, val_fraction: float
) -> None:
    """Prepare `chats` into `data_dir` with the tuned model's tokenizer (plus the chat markers) and block size: the
    source's, or when resuming the tuned checkpoint's; an up-to-date folder is used as it is."""
    from hellogpt.checkpoints.format import load_checkpoint
    from hellogpt.data.chat_prepare import prepare_chats_for_model

    if init is not None:
        tokenizer, block_size = init.get("tokenizer"), int(init["model_args"]["block_size"])
    else:
        resumed = load_checkpoint(checkpoint_path, map_weights=True)
        tokenizer, block_size = resumed.tokenizer, resumed.model_args.block_size
    if not tokenizer:
        raise UserError(f"the model records no tokenizer, so {chats} cannot be prepared for it: prepare it yourself")
    result = prepare_chats_for_model(chats, data_dir, tokenizer, block_size, val_fraction)
    what = "already prepared in" if result.skipped else "prepared into"
    typer.echo(f"{chats}: {what} {data_dir} (the model's tokenizer + chat markers, rows of {block_size})", err=True)
