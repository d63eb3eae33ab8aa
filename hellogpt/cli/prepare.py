"""`hellogpt prepare`: turn text files, folders or a built-in corpus into token bins for training."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console

from hellogpt.config.tokenizer_names import TOKENIZER_NAMES_HELP

if TYPE_CHECKING:
    from hellogpt.data.prepare import PrepareResult


class EncodingErrors(str, Enum):
    strict = "strict"
    replace = "replace"


def register(app: typer.Typer) -> None:
    app.command("prepare")(prepare)


def prepare(
    sources: Annotated[
        list[str],
        typer.Argument(
            help="A .txt file, a folder (searched recursively with --glob), or a built-in corpus: builtin:pydoc "
            "(Python's help texts), builtin:edgar_poe or builtin:poems (shipped public-domain texts).",
            show_default=False,
        ),
    ],
    out: Annotated[
        Optional[Path],
        typer.Option("--out", "-o", help="Output folder. Default: data/<source name> (builtin:pydoc -> data/pydoc).",
                     show_default=False),
    ] = None,
    tokenizer: Annotated[
        Optional[str],
        typer.Option(
            "--tokenizer",
            "-t",
            help=f"{TOKENIZER_NAMES_HELP}; default: data.tokenizer (gpt2).",
            show_default=False,
        ),
    ] = None,
    val_fraction: Annotated[
        Optional[float],
        typer.Option(
            "--val-fraction",
            help="Share of the text kept for validation (whole documents when possible); default: data.val_fraction.",
            show_default=False,
        ),
    ] = None,
    glob: Annotated[str, typer.Option("--glob", help="Which files of a folder to read.")] = "*.txt",
    force: Annotated[bool, typer.Option("--force", help="Prepare again even when the output is up to date.")] = False,
    block_size: Annotated[
        Optional[int],
        typer.Option(
            "--block-size",
            help="Conversations only: the model's context length; longer ones are cut at a turn start into rows "
            "of at most this many tokens. Default: model.block_size.",
            show_default=False,
        ),
    ] = None,
    encoding_errors: Annotated[
        EncodingErrors,
        typer.Option("--encoding-errors", help="strict stops at bytes that are not UTF-8; replace turns them into U+FFFD."),
    ] = EncodingErrors.strict,
) -> None:
    """Tokenise texts into train.bin, val.bin and meta.json for [bold]hellogpt train[/].

    [dim]Examples: hellogpt prepare builtin:pydoc --tokenizer char | hellogpt prepare ~/books --out data/books |
    hellogpt prepare notes.txt poems/ --glob '*.md'[/]
    """
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    from hellogpt.config.schema import DataConfig
    from hellogpt.data.prepare import default_out_dir, prepare_dataset

    defaults = DataConfig()  # the schema holds the defaults; loading it here keeps `--help` fast
    out_dir = out if out is not None else default_out_dir(sources)
    progress_console = Console(stderr=True)
    bar = Progress(
        TextColumn("[bold]tokenising[/]"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=progress_console,
        transient=True,
        disable=not progress_console.is_terminal,
    )
    task = bar.add_task("tokenising", total=None)

    def show_progress(done: int, total: int) -> None:
        # Started at the first report, after the worker processes: the bar's refresh thread would otherwise
        # run while they are forked (prepare then falls back to slower spawned workers).
        if not bar.live.is_started:
            bar.start()
        bar.update(task, completed=done, total=total)

    try:
        result = prepare_dataset(
            sources,
            out_dir,
            tokenizer=tokenizer if tokenizer is not None else defaults.tokenizer,
            val_fraction=val_fraction if val_fraction is not None else defaults.val_fraction,
            glob=glob,
            force=force,
            encoding_errors=encoding_errors.value,
            progress=show_progress,
            block_size=block_size,
        )
    finally:
        bar.stop()
    if result.skipped:
        typer.echo(
            f"{out_dir} is up to date ({result.train_tokens:,} train + {result.val_tokens:,} val tokens); "
            "--force prepares it again"
        )
        return
    if result.meta.get("format") == "chat":
        typer.echo(chat_summary(out_dir, result))
        return
    typer.echo(
        f"wrote {out_dir}: {result.train_tokens:,} train + {result.val_tokens:,} val tokens "
        f"({result.meta['tokenizer_name']}, vocab {result.meta['vocab_size']:,}, {result.meta['dtype']}) "
        f"from {result.meta['documents']} document(s), {result.source_bytes / 1e6:.2f} MB "
        f"in {result.seconds:.1f} s"
    )


def chat_summary(out_dir: Path, result: "PrepareResult") -> str:
    """What a chat dataset holds: conversations, turns, the share of tokens trained on, how many were cut."""
    meta = result.meta
    conversations = meta["conversations"]
    share = meta["trained_tokens"] / max(1, result.train_tokens + result.val_tokens)
    cut = meta["cut_conversations"]
    cut_note = f"; {cut} longer than --block-size {meta['block_size']} cut at turn starts" if cut else ""
    return (
        f"wrote {out_dir}: {conversations['train']:,} train + {conversations['val']:,} val conversations, "
        f"{meta['turns']:,} turns, {result.train_tokens:,} + {result.val_tokens:,} tokens "
        f"({meta['tokenizer_name']} + chat markers, vocab {meta['vocab_size']:,}), {share:.0%} trained on "
        f"(assistant replies){cut_note}, in {result.seconds:.1f} s"
    )
