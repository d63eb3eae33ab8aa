"""`hellogpt export`: one of our checkpoints as a Hugging Face transformers model directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

# The export core (torch, transformers) is imported inside the command: this module loads for `hellogpt --help`.


def register(app: typer.Typer) -> None:
    app.command("export")(export)


def export(
    checkpoint: Annotated[
        str,
        typer.Argument(
            metavar="CHECKPOINT", help="A checkpoint name (looked up in checkpoints/) or path.", show_default=False
        ),
    ],
    out_dir: Annotated[
        Path,
        typer.Argument(
            metavar="OUT_DIR",
            help="The directory to write (config.json, model.safetensors, tokenizer files).",
            show_default=False,
        ),
    ],
    force: Annotated[
        bool, typer.Option("--force", "-f", help="Replace OUT_DIR if it is a previous export or an empty directory.")
    ] = False,
) -> None:
    """Write a checkpoint as a directory that transformers' from_pretrained loads.

    A LoRA checkpoint is written with its adapters merged into its base (which must be where it was tuned).

    [dim]Example: hellogpt export poems_hugs.pt exported/poems_hugs[/]
    """
    from hellogpt.checkpoints.format import load_checkpoint
    from hellogpt.checkpoints.lora_base import merged_checkpoint
    from hellogpt.checkpoints.paths import resolve_checkpoint_path
    from hellogpt.export import export_checkpoint
    from hellogpt.model.hf import CHAR_VOCABULARY_FILE

    checkpoint_path = resolve_checkpoint_path(checkpoint)
    loaded = load_checkpoint(checkpoint_path)
    if loaded.is_lora:
        loaded = merged_checkpoint(loaded)
    written = export_checkpoint(loaded.to_payload(), out_dir, force=force)
    console = Console(highlight=False, markup=False, soft_wrap=True)
    files = ", ".join(sorted(path.name for path in written.iterdir()))
    console.print(f"exported {checkpoint_path} to {written}/ ({files})")
    if (loaded.tokenizer or {}).get("kind") == "char":
        console.print(
            f"note: a character-level model has no transformers tokenizer; its characters (id order) are in "
            f"{CHAR_VOCABULARY_FILE}: encode with them yourself"
        )
        return
    console.print(
        "load it with: from transformers import AutoTokenizer, GPT2LMHeadModel; "
        f"GPT2LMHeadModel.from_pretrained('{written}'); AutoTokenizer.from_pretrained('{written}')"
    )
    console.print(f"or talk to it: hellogpt chat --from {written}")
