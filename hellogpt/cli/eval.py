"""`hellogpt eval`: loss, perplexity and bits per byte of checkpoints and Hugging Face models on one dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from hellogpt.errors import UserError

if TYPE_CHECKING:
    from hellogpt.config.schema import SystemConfig
    from hellogpt.evaluate import Evaluation


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)


def eval_command(
    targets: Annotated[
        Optional[list[str]],
        typer.Argument(
            metavar="TARGET...",
            help="Checkpoints (name or path; LoRA ones load their base) or Hugging Face models, in the order shown.",
            show_default=False,
        ),
    ] = None,
    sources: Annotated[
        Optional[list[str]],
        typer.Option("--from", help="A Hugging Face GPT-2 (gpt2, owner/name, a folder); repeatable; listed after TARGETs."),
    ] = None,
    data: Annotated[
        Optional[Path], typer.Option("--data", help="The dataset folder (from hellogpt prepare).", show_default=False)
    ] = None,
    split: Annotated[str, typer.Option("--split", help="val or train.")] = "val",
    iters: Annotated[
        Optional[int],
        typer.Option("--iters", min=1, help="At most this many batches of 8 windows (default: the whole split)."),
    ] = None,
    device: Annotated[
        Optional[str], typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps [default: system.device's, auto].")
    ] = None,
    dtype: Annotated[
        Optional[str],
        typer.Option("--dtype", help="auto, float32, bfloat16 or float16: autocast over fp32 weights [default: auto]."),
    ] = None,
    quantize: Annotated[
        Optional[str],
        typer.Option("--quantize", help="int8: score with int8 weights, as chat/serve --quantize int8 decode (CPU) [default: none]."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list of objects, for scripts.")] = False,
) -> None:
    """Score models on a dataset split: loss, perplexity and bits per byte, all on the same windows.

    Bits per byte (total loss in bits / UTF-8 bytes of the scored tokens) compares models with different
    tokenizers fairly. [dim]Examples: hellogpt eval edgar_poe.pt poems_from_poe.pt --data data/poems |
    hellogpt eval poems_lora.pt --from gpt2 --data data/poems --json[/]
    """
    from hellogpt.data.loader import SPLITS, open_dataset
    from hellogpt.evaluate import EvalTarget, checkpoint_target, check_tokenizer, huggingface_target, window_starts

    if data is None:
        raise UserError("eval needs --data DIR: a dataset prepared with the models' tokenizer (hellogpt prepare)")
    if split not in SPLITS:
        raise UserError(f"--split {split} is not a split: use val or train")
    if not targets and not sources:
        raise UserError("which models? give checkpoints (hellogpt eval NAME.pt ... --data DIR) and/or --from gpt2")
    system = _system(device, dtype, quantize)
    dataset = open_dataset(data)
    chosen: list[EvalTarget] = [checkpoint_target(spec) for spec in targets or []]
    chosen += [huggingface_target(spec) for spec in sources or []]
    for target in chosen:
        check_tokenizer(target, dataset)
    length = min(target.architecture.block_size for target in chosen)
    starts = window_starts(dataset, split, length, None if iters is None else iters * _batch_size())
    results = [_evaluate(target, dataset, split, starts, length, system) for target in chosen]
    if as_json:
        typer.echo(json.dumps([result.to_json() for result in results], indent=2))
        return
    _print_table(results, f"{split} split of {dataset.path}: {len(starts)} windows of {length} tokens")


def _system(device: Optional[str], dtype: Optional[str], quantize: Optional[str]) -> "SystemConfig":
    """--device, --dtype and --quantize checked by the schema (which holds their defaults)."""
    from pydantic import ValidationError

    from hellogpt.config.schema import SystemConfig

    flags = (("device", device), ("dtype", dtype), ("quantize", quantize))
    given = {key: value for key, value in flags if value is not None}
    try:
        return SystemConfig(**given)
    except ValidationError as error:
        problem = error.errors()[0]
        flag = f"--{problem['loc'][0]}"
        raise UserError(f"{flag} {given[problem['loc'][0]]}: {problem['msg'].removeprefix('Value error, ')}") from None


def _batch_size() -> int:
    from hellogpt.evaluate import EVAL_BATCH_SIZE

    return EVAL_BATCH_SIZE


def _evaluate(target, dataset, split: str, starts, length: int, system: "SystemConfig") -> "Evaluation":
    """Load one model (only one is in memory at a time), score it with a progress bar on stderr, free it."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    import torch

    from hellogpt.evaluate import evaluate_model, load_target_model
    from hellogpt.model_source import choose_device_for
    from hellogpt.generate import prepare_int8_for_inference
    from hellogpt.hardware.devices import choose_dtype

    device = choose_device_for(system)
    model = load_target_model(target)
    if system.quantize == "int8":
        model, dtype = prepare_int8_for_inference(model, device), torch.float32
    else:
        dtype = choose_dtype(system.dtype, device, target.architecture)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(f"eval {target.label}", total=len(starts))
        result = evaluate_model(
            model, target.label, dataset.tokenizer, dataset, split, starts, length, device, dtype,
            on_progress=lambda done, total: progress.update(task, completed=done),
        )
    del model
    return result


def _print_table(results: list["Evaluation"], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    split = results[0].split
    table.add_column("model", overflow="fold")
    for header in (f"{split} loss", "perplexity", "bits/byte", "tokens"):
        table.add_column(header, justify="right")
    for result in results:
        table.add_row(
            result.target, f"{result.loss:.4f}", f"{result.perplexity:.2f}", f"{result.bits_per_byte:.4f}", f"{result.tokens:,}"
        )
    Console(highlight=False).print(table)
