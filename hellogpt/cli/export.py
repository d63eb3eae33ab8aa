"""`hellogpt export`: one of our checkpoints as a Hugging Face transformers model directory, or as a GGUF file."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from hellogpt.errors import UserError

# The export core (torch, transformers) is imported inside the command: this module loads for `hellogpt --help`.


def register(app: typer.Typer) -> None:
    app.command("export")(export)


class ExportFormat(str, Enum):
    hf = "hf"
    gguf = "gguf"


# The same choices as hellogpt.gguf_export.GGUF_TENSOR_TYPES (a test keeps them equal): named here so that
# --help lists them without importing the export core.
class GgufType(str, Enum):
    f32 = "f32"
    f16 = "f16"
    q8_0 = "q8_0"


def export(
    checkpoint: Annotated[
        str,
        typer.Argument(
            metavar="CHECKPOINT", help="A checkpoint name (looked up in checkpoints/) or path.", show_default=False
        ),
    ],
    out: Annotated[
        Path,
        typer.Argument(
            metavar="OUT",
            help="The directory to write (config.json, model.safetensors, tokenizer files), or a file ending in "
            ".gguf for llama.cpp.",
            show_default=False,
        ),
    ],
    force: Annotated[
        bool,
        typer.Option(
            "--force", "-f", help="Replace OUT if it is a previous export or an empty directory (a GGUF: any file)."
        ),
    ] = False,
    export_format: Annotated[
        Optional[ExportFormat],
        typer.Option(
            "--format", help="hf: a transformers directory; gguf: one file for llama.cpp and Ollama. "
            "[default: gguf when OUT ends in .gguf, else hf]", show_default=False,
        ),
    ] = None,
    gguf_type: Annotated[
        Optional[GgufType],
        typer.Option(
            "--gguf-type", help="The GGUF's matrices: f32 (exact), f16 (half the size) or q8_0 (8-bit, a quarter). "
            "[default: f16, as llama.cpp's converter]", show_default=False,
        ),
    ] = None,
) -> None:
    """Write a checkpoint as a directory that transformers' from_pretrained loads, or as a GGUF file for llama.cpp.

    A LoRA checkpoint is written with its adapters merged into its base (which must be where it was tuned).

    [dim]Examples: hellogpt export poems_hugs.pt exported/poems_hugs; hellogpt export poems_hugs.pt poems.gguf[/]
    """
    is_gguf = export_format == ExportFormat.gguf or (export_format is None and out.suffix.lower() == ".gguf")
    if gguf_type is not None and not is_gguf:
        raise UserError("--gguf-type applies to GGUF only: name OUT *.gguf or pass --format gguf")
    if is_gguf:
        _export_gguf(checkpoint, out, force, gguf_type)
        return
    from hellogpt.checkpoints.format import load_checkpoint
    from hellogpt.checkpoints.lora_base import merged_checkpoint
    from hellogpt.checkpoints.paths import resolve_checkpoint_path
    from hellogpt.export import export_checkpoint

    checkpoint_path = resolve_checkpoint_path(checkpoint)
    loaded = load_checkpoint(checkpoint_path)
    if loaded.is_lora:
        loaded = merged_checkpoint(loaded)
    written = export_checkpoint(loaded.to_payload(), out, force=force)
    console = Console(highlight=False, markup=False, soft_wrap=True)
    files = ", ".join(sorted(path.name for path in written.iterdir()))
    console.print(f"exported {checkpoint_path} to {written}/ ({files})")
    console.print(
        "load it with: from transformers import AutoModelForCausalLM, AutoTokenizer; "
        f"AutoModelForCausalLM.from_pretrained('{written}'); AutoTokenizer.from_pretrained('{written}')"
    )
    console.print(f"or talk to it: hellogpt chat --from {written}")  # with its own tokenizer (hellogpt_tokenizer.json)


def _export_gguf(checkpoint: str, out_path: Path, force: bool, gguf_type: Optional[GgufType]) -> None:
    from hellogpt.checkpoints.format import load_checkpoint
    from hellogpt.checkpoints.paths import resolve_checkpoint_path
    from hellogpt.gguf_export import DEFAULT_GGUF_TENSOR_TYPE, export_gguf

    checkpoint_path = resolve_checkpoint_path(checkpoint)
    tensor_type = gguf_type.value if gguf_type is not None else DEFAULT_GGUF_TENSOR_TYPE
    written = export_gguf(
        load_checkpoint(checkpoint_path), out_path, tensor_type=tensor_type, force=force, name=checkpoint_path.stem
    )
    console = Console(highlight=False, markup=False, soft_wrap=True)
    chat = ", with its chat template" if written.has_chat_template else ""
    console.print(
        f"exported {checkpoint_path} to {written.path} (GGUF, {written.architecture}, {written.tensor_type}, "
        f"{written.size_bytes / 1e6:,.1f} MB{chat})"
    )
    console.print(f"run it with: llama-cli -m {written.path}")
    console.print(
        f"or in Ollama: a Modelfile holding 'FROM ./{written.path.name}', then: ollama create NAME -f Modelfile"
    )
