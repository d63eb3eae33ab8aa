"""`hellogpt chat`: talk to a checkpoint or a Hugging Face model, interactively or from a script.

Sampling settings, lowest to highest: the schema's base, the checkpoint's own `sample` section,
--profile, --config files, --set, then the flags (--temperature, --top-k, ...).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any, Callable, Optional

import typer

from hellogpt.cli.model_options import (
    CheckpointOption,
    DeviceOption,
    Gpt2BaseOption,
    QuantizeOption,
    SourceOption,
    one_model_source,
    with_flags,
)
from hellogpt.cli.options import ConfigOption, ProfileOption, SetOption, resolve_cli_config
from hellogpt.errors import UserError
from hellogpt.model_source import LoadedModel, load_model, model_for_inference

if TYPE_CHECKING:
    from rich.console import Console

    from hellogpt.chat import ChatSession, ReplyStats

SAMPLE_SEPARATOR = "\n---\n"
# Lines arriving within this gap of each other were pasted as one block, not typed.
PASTE_GAP_SECONDS = 0.01


def register(app: typer.Typer) -> None:
    app.command("chat")(chat)


def chat(
    checkpoint: CheckpointOption = None,
    source: SourceOption = None,
    gpt2base: Gpt2BaseOption = None,
    prompt: Annotated[
        Optional[str], typer.Option("--prompt", help="Complete this text (a chat model answers it as a message), print only that and exit.")
    ] = None,
    num_samples: Annotated[
        int, typer.Option("--num-samples", "-n", min=1, help="Completions of the prompt, separated by a '---' line.")
    ] = 1,
    memory: Annotated[
        Optional[bool],
        typer.Option(
            "--memory/--no-memory",
            help="Conversation mode: earlier turns stay in the context (/memory on|off). Default: on for chat models.",
        ),
    ] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed for reproducible replies.")] = None,
    temperature: Annotated[Optional[float], typer.Option("--temperature", "-t", help="0 = greedy; higher = wilder.")] = None,
    top_k: Annotated[Optional[int], typer.Option("--top-k", help="Sample among the k most likely tokens.")] = None,
    top_p: Annotated[Optional[float], typer.Option("--top-p", help="Nucleus sampling: the most likely tokens holding this mass.")] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option("--max-new-tokens", help="Longest reply, in tokens.")] = None,
    device: DeviceOption = None,
    quantize: QuantizeOption = None,
    profile: ProfileOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Chat with a model: the reply streams as it is written; /help lists the commands.

    [dim]Examples: hellogpt chat --checkpoint edgar_poe | hellogpt chat --from gpt2 --prompt "Once upon a time" |
    echo "The raven" | hellogpt chat -k edgar_poe --seed 1 -n 3[/]
    """
    source = one_model_source(checkpoint, source or gpt2base)
    flags = {"seed": seed, "temperature": temperature, "top_k": top_k, "top_p": top_p, "max_new_tokens": max_new_tokens}
    interactive = prompt is None and sys.stdin.isatty()
    if not interactive and prompt is None:
        prompt = sys.stdin.read().rstrip("\n")
    loaded = load_model(checkpoint, source)
    run_config = resolve_cli_config(profile, config, set_, defaults=loaded.sample_defaults).config
    run_config = with_flags(run_config, {"sample": flags, "system": {"device": device, "quantize": quantize}})
    if interactive:
        view = _TerminalView(_console(), _console(stderr=True))
        _run_interactive(_start_session(loaded, run_config, remembers(memory, loaded), view.show_notice), view)
    else:
        output = _PlainOutput()
        _complete(_start_session(loaded, run_config, False, output.show_notice), prompt or "", num_samples, output)


def remembers(memory: Optional[bool], loaded: "LoadedModel") -> bool:
    """Whether the REPL keeps earlier turns: as --memory/--no-memory says, else yes for a chat model (a conversation)
    and no for a base model (each prompt is text to continue)."""
    return memory if memory is not None else loaded.chat_template is not None


def _start_session(
    loaded: "LoadedModel", config: Any, memory: bool, on_notice: Callable[[str], None]
) -> "ChatSession":
    from hellogpt.chat import ChatSession

    return ChatSession(
        model_for_inference(loaded, config), loaded.tokenizer, config.sample, memory=memory, model_info=loaded.info,
        on_notice=on_notice, chat_template=loaded.chat_template,
    )


def _complete(session: "ChatSession", prompt: str, num_samples: int, output: "_PlainOutput") -> None:
    """Print only the completions, streamed, plain: for pipes and scripts. A failed reply is a one-line UserError."""
    from hellogpt.chat import describe_failure

    try:
        for index in range(num_samples):
            if index:
                output.write(SAMPLE_SEPARATOR)
            for piece in session.respond(prompt):
                output.write(piece)
    except Exception as error:
        output.end_line()  # the error line must not be glued to half a completion
        if isinstance(error, UserError):
            raise
        raise UserError(describe_failure("the reply", error)) from None
    output.write("\n")


class _PlainOutput:
    """stdout for --prompt and stdin mode, and notes on stderr that wait for stdout to reach a line start:
    where a terminal shows both streams, a note is never glued to the end of a completion."""

    def __init__(self) -> None:
        self._at_line_start = True
        self._waiting_notes: list[str] = []

    def write(self, text: str) -> None:
        if not text:
            return
        sys.stdout.write(text)
        sys.stdout.flush()
        self._at_line_start = text.endswith("\n")
        self._show_waiting_notes()

    def end_line(self) -> None:
        """Finish a partial line (before an error), so that what follows on stderr starts on its own."""
        if not self._at_line_start:
            self.write("\n")

    def show_notice(self, message: str) -> None:
        self._waiting_notes.append(message)
        self._show_waiting_notes()

    def _show_waiting_notes(self) -> None:
        if not self._at_line_start:
            return
        for message in self._waiting_notes:
            print(f"note: {message}", file=sys.stderr, flush=True)
        self._waiting_notes.clear()


def _console(stderr: bool = False) -> "Console":
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


class _TerminalView:
    """Shows the REPL with rich: the reply raw as it streams, then a dim line with its speed.

    Notes go to `notes` (stderr), errors and the rest to `console`; each starts on a line of its own, even in
    the middle of a reply.
    """

    def __init__(self, console: "Console", notes: "Console") -> None:
        self.console = console
        self.notes = notes
        self._at_line_start = True

    def show_reply_piece(self, text: str) -> None:
        self.console.file.write(text)
        self.console.file.flush()
        self._at_line_start = text.endswith("\n")

    def show_reply_end(self, stats: "ReplyStats") -> None:
        self._end_line()
        stopped = ", stopped" if stats.interrupted else ""
        self.console.print(f"[dim]{stats.tokens} tokens, {stats.tokens_per_second:.1f} tokens/s{stopped}[/]")

    def show_message(self, text: str) -> None:
        self.console.print(text, markup=False)

    def show_error(self, text: str) -> None:
        from rich.markup import escape

        self._end_line()
        self.console.print(f"[bold red]error:[/] {escape(text)}")

    def show_notice(self, text: str) -> None:
        from rich.markup import escape

        self._end_line()
        self.notes.print(f"[dim]{escape(text)}[/]")

    def _end_line(self) -> None:
        if not self._at_line_start:
            self.console.file.write("\n")
            self.console.file.flush()
        self._at_line_start = True


def _run_interactive(session: "ChatSession", view: _TerminalView) -> None:
    from hellogpt.chat import BASE_MODEL_INTRO, CHAT_MODEL_INTRO, run_repl
    from hellogpt.formatting import format_count

    console = view.console
    _enable_line_editing()
    facts = session.model_info.get("model", "the model")
    console.print(
        f"[bold]hellogpt chat[/] with {facts} ({format_count(session.model.num_parameters())} parameters). "
        f"{CHAT_MODEL_INTRO if session.is_chat_model else BASE_MODEL_INTRO} [bold]/help[/] for commands, Ctrl-D to quit."
    )
    console.print(f"[dim]{session.settings_text()}[/]")
    if run_repl(session, _prompt_reader(console), view) != "quit":
        console.print()  # Ctrl-D or Ctrl-C left the cursor after the prompt


def _enable_line_editing() -> None:
    """readline gives input() history and editing, and bracketed paste (a pasted block arrives as one input)."""
    try:
        import readline  # noqa: F401
    except ImportError:
        pass


def _prompt_reader(console: "Console"):
    """`input()` with a coloured prompt that readline measures correctly (escapes wrapped in \\001..\\002).

    Lines already waiting on stdin when one is read were pasted together: they come back as one prompt.
    """
    from hellogpt.chat import CONTINUATION_PROMPT

    styled = console.is_terminal and not console.no_color

    def styled_input(prompt: str) -> str:
        return input(f"\001\033[1;32m\002{prompt}\001\033[0m\002" if styled else prompt)

    def read_line(prompt: str) -> str:
        lines = [styled_input(prompt)]
        while _more_input_waiting():
            lines.append(styled_input(CONTINUATION_PROMPT))
        return "\n".join(lines)

    return read_line


def _more_input_waiting() -> bool:
    """True when stdin already holds more typed or pasted text (readline reads it byte by byte, so it is still there)."""
    import select

    try:
        return bool(select.select([sys.stdin], [], [], PASTE_GAP_SECONDS)[0])
    except (OSError, ValueError):
        return False
