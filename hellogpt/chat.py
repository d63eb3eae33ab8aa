"""The chat REPL around `generate.py`, independent of the terminal.

`ChatSession` holds the model, tokenizer, sampling settings and history, streams replies as
text pieces and runs the slash commands. A chat model (one with a chat template) is given each prompt as a user
message, the conversation so far and the system message rendered by its template, and its reply ends at its
end-of-turn token; a base model continues the text it is given (docs/chat.md). `run_repl` is the read-respond
loop; it reads through a `read_line` function and shows through a `ReplView`, so tests drive it without a terminal
and the CLI plugs in readline and rich.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Protocol

import torch
import yaml
from pydantic import ValidationError

from hellogpt.config.schema import SampleConfig, fresh_seed
from hellogpt.data.chat_template import render_prompt, turn_end_id
from hellogpt.data.conversation import continued_text, prompt_or_end_of_text
from hellogpt.data.tokenizer import Tokenizer
from hellogpt.errors import UserError
from hellogpt.files import write_text_atomically
from hellogpt.formatting import format_count
from hellogpt.decode.stream import stream_tokens
from hellogpt.decode.text import stream_text
from hellogpt.model.gpt import GPT

PROMPT = ">>> "
CONTINUATION_PROMPT = "... "
LINE_CONTINUATION = "\\"
ReplEnd = Literal["quit", "end of input", "interrupted"]
# An unexpected error's message is shown on one line, cut to this many characters (torch's run to pages).
FAILURE_MESSAGE_CHARS = 300
UNSET_WORDS = frozenset({"none", "null", "off", "unset", "-"})
BASE_MODEL_INTRO = "Type text and the model continues it."
CHAT_MODEL_INTRO = "Type a message and the chat model answers it; /memory off sends each message on its own."
HELP_TEXT = """\
{intro} A line ending in \\ continues on the next line.
  /help                 this list
  /set                  show the sampling settings
  /set KEY VALUE        change one: temperature (0 = greedy), top_k, top_p, max_new_tokens, seed (none unsets)
  /memory on|off        conversation mode: earlier turns stay in the context (off: each prompt on its own)
  /system TEXT          a chat model's system message (/system alone shows it, /system none removes it)
  /reset                forget the history and restart the seed
  /history              show this session's turns
  /save FILE            write the transcript to FILE
  /info                 describe the model
  /quit                 leave (also Ctrl-D, or Ctrl-C at the prompt)
Ctrl-C during a reply stops it."""


@dataclass(frozen=True)
class ReplyStats:
    """How long a reply took, for the line shown after it."""

    tokens: int
    seconds: float
    interrupted: bool = False

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Turn:
    prompt: str
    reply: str
    stats: ReplyStats


@dataclass(frozen=True)
class CommandResult:
    """What a slash command has to say, and whether the REPL should end."""

    message: str = ""
    quit: bool = False


@dataclass
class ChatSession:
    """A model, its tokenizer, sampling settings and the turns so far; prints nothing.

    `on_notice` receives one-off remarks (the context window sliding) for the caller to show. With `chat_template`
    the model is a chat model: prompts are user messages, `system_message` leads the conversation, replies end at
    the template's end-of-turn token.
    """

    model: GPT
    tokenizer: Tokenizer
    settings: SampleConfig = field(default_factory=SampleConfig)
    memory: bool = False
    model_info: dict[str, Any] = field(default_factory=dict)
    on_notice: Callable[[str], None] = lambda message: None
    chat_template: Optional[str] = None
    system_message: Optional[str] = None
    history: list[Turn] = field(default_factory=list)
    last_reply: Optional[ReplyStats] = None

    def __post_init__(self) -> None:
        self._generator = torch.Generator(device=self.model.lm_head.weight.device)
        self._notices_given: set[str] = set()
        self.restart_seed()

    @property
    def is_chat_model(self) -> bool:
        return self.chat_template is not None

    def restart_seed(self) -> None:
        """Seed the sampler from `settings.seed`, or from fresh entropy when it is unset."""
        seed = self.settings.seed if self.settings.seed is not None else fresh_seed()
        self._generator.manual_seed(seed)

    def respond(self, prompt: str) -> Iterator[str]:
        """Stream the reply to `prompt` as text pieces; the turn is recorded even when the stream is cut short
        (Ctrl-C), but not when it fails: a broken reply would otherwise become context in memory mode."""
        self.last_reply = None
        prompt_ids = self._encode_context(prompt)
        pieces: list[str] = []
        token_count = 0
        slid: list[int] = []  # token counts at which the context window slid
        start = time.perf_counter()

        def counted(token_ids: Iterator[int]) -> Iterator[int]:
            nonlocal token_count
            for token_id in token_ids:
                token_count += 1
                yield token_id

        tokens = stream_tokens(
            self.model,
            prompt_ids,
            max_new_tokens=self.settings.max_new_tokens,
            temperature=self.settings.temperature,
            vocab_size=self.tokenizer.vocab_size,
            top_k=self.settings.top_k,
            top_p=self.settings.top_p,
            eot_id=turn_end_id(self.tokenizer) if self.is_chat_model else self.tokenizer.eot_id,
            generator=self._generator,
            on_window_slide=lambda _dropped_tokens: slid.append(token_count),
        )
        finished = failed = False
        try:
            for piece in stream_text(self.tokenizer, counted(tokens)):
                if slid and slid[0] == 0:
                    self._notice_window_slide()  # the prompt itself was too long: say so before the reply
                pieces.append(piece)
                yield piece
            finished = True
        except Exception:
            failed = True
            raise
        finally:
            if slid:
                self._notice_window_slide()  # the reply outgrew the window: said after it, not inside it
            if not failed:
                self.last_reply = ReplyStats(token_count, time.perf_counter() - start, interrupted=not finished)
                self.history.append(Turn(prompt, "".join(pieces), self.last_reply))

    def run_command(self, line: str) -> CommandResult:
        """Run one slash command (`/help`, `/set`, ...); unknown ones get a hint, never an exception."""
        name, _, argument = line.strip().partition(" ")
        argument = argument.strip()
        handlers: dict[str, Callable[[str], CommandResult]] = {
            "/help": lambda _: CommandResult(self.help_text()),
            "/set": self._set,
            "/memory": self._set_memory,
            "/system": self._set_system,
            "/reset": self._reset,
            "/history": lambda _: CommandResult(self.history_text() or "(no turns yet)"),
            "/save": self._save,
            "/info": lambda _: CommandResult(self.info_text()),
            "/quit": lambda _: CommandResult(quit=True),
            "/exit": lambda _: CommandResult(quit=True),
        }
        handler = handlers.get(name.lower())
        if handler is None:
            return CommandResult(f"unknown command {name}: /help lists the commands")
        return handler(argument)

    def help_text(self) -> str:
        return HELP_TEXT.format(intro=CHAT_MODEL_INTRO if self.is_chat_model else BASE_MODEL_INTRO)

    def history_text(self) -> str:
        """The turns as a readable transcript; a chat model's as its messages, the system message first."""
        if self.is_chat_model:
            return "\n\n".join(f"### {message['role']}\n{message['content']}" for message in self.messages())
        return "\n\n".join(
            f"### You\n{turn.prompt}\n\n### Model{' (interrupted)' if turn.stats.interrupted else ''}\n{turn.reply}"
            for turn in self.history
        )

    def messages(self) -> list[dict[str, str]]:
        """The conversation so far as chat messages, the system message first."""
        return self._system_messages() + self._turn_messages()

    def settings_text(self) -> str:
        values = self.settings.model_dump()
        return "  ".join(f"{key}={'none' if value is None else value}" for key, value in values.items()) + (
            f"  memory={'on' if self.memory else 'off'}"
        )

    def info_text(self) -> str:
        config = self.model.config
        weight = self.model.lm_head.weight
        facts = {
            **self.model_info,
            "parameters": format_count(self.model.num_parameters()),
            "shape": f"{config.n_layer} layers x {config.n_embd} wide, {config.n_head} heads",
            "context": f"{config.block_size} tokens",
            "vocabulary": f"{config.vocab_size} ({self.tokenizer.name} tokenizer)",
            "kind": "chat model (ChatML template)" if self.is_chat_model else "base model (continues text)",
            "device": f"{weight.device} {str(weight.dtype).removeprefix('torch.')}"
            + (f", {torch.get_num_threads()} thread(s)" if weight.device.type == "cpu" else ""),
            "sampling": self.settings_text(),
        }
        width = max(len(key) for key in facts)
        return "\n".join(f"{key:<{width}}  {value}" for key, value in facts.items())

    def _encode_context(self, prompt: str) -> list[int]:
        if self.is_chat_model:
            return self._chat_context(prompt)
        earlier = [(turn.prompt, turn.reply) for turn in self.history] if self.memory else []
        return prompt_or_end_of_text(self.tokenizer.encode(continued_text(earlier, prompt)), self.tokenizer)

    def _chat_context(self, prompt: str) -> list[int]:
        """The conversation for a chat model, its oldest exchanges left out while it would not leave room in the
        context for the reply (up to half of it): cutting whole turns keeps the system message and every turn's
        markers, where the sliding window would cut into the first turn it keeps."""
        config = self.model.config
        budget = config.block_size - min(self.settings.max_new_tokens, config.block_size // 2)
        earlier = self._turn_messages() if self.memory else []
        user = {"role": "user", "content": prompt}
        while True:
            ids = render_prompt([*self._system_messages(), *earlier, user], self.tokenizer)
            if len(ids) <= budget or not earlier:
                return ids
            earlier = earlier[2:]  # one exchange: the user's message and the reply
            self._notice_turns_left_out()

    def _notice_turns_left_out(self) -> None:
        self._notice_once(
            f"the conversation is longer than the model's {self.model.config.block_size} tokens: "
            "its oldest turns are left out"
        )

    def _system_messages(self) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system_message}] if self.system_message is not None else []

    def _turn_messages(self) -> list[dict[str, str]]:
        messages = []
        for turn in self.history:
            messages += [{"role": "user", "content": turn.prompt}, {"role": "assistant", "content": turn.reply}]
        return messages

    def _notice_window_slide(self) -> None:
        self._notice_once(
            f"the context is longer than the model's {self.model.config.block_size} tokens: "
            "only the most recent ones are used"
        )

    def _notice_once(self, message: str) -> None:
        """Tell the caller `message` the first time only: a remark repeated on every reply would be noise."""
        if message not in self._notices_given:
            self._notices_given.add(message)
            self.on_notice(message)

    def _set(self, argument: str) -> CommandResult:
        if not argument:
            return CommandResult(self.settings_text())
        key, _, raw_value = argument.partition(" ")
        key = key.strip().lower().replace("-", "_")
        if key not in SampleConfig.model_fields:
            return CommandResult(f"unknown setting {key!r}: choose one of {', '.join(SampleConfig.model_fields)}")
        if not raw_value.strip():
            return CommandResult(f"/set {key} needs a value, for example /set temperature 0.7")
        try:
            self.settings = SampleConfig.model_validate(
                {**self.settings.model_dump(), key: _parse_setting_value(raw_value)}
            )
        except ValidationError as error:
            problem = error.errors()[0]
            return CommandResult(f"{key}: {problem['msg'].removeprefix('Value error, ')}")
        if key == "seed":
            self.restart_seed()
        return CommandResult(self.settings_text())

    def _set_memory(self, argument: str) -> CommandResult:
        choice = argument.lower()
        if choice in {"on", "off"}:
            self.memory = choice == "on"
        elif choice:
            return CommandResult("usage: /memory on|off")
        mode = "on: earlier turns stay in the context" if self.memory else "off: each prompt on its own"
        return CommandResult(f"memory {mode}")

    def _set_system(self, argument: str) -> CommandResult:
        if not self.is_chat_model:
            return CommandResult("this is a base model: it has no system message (it continues the text you type)")
        if argument.lower() in UNSET_WORDS:
            self.system_message = None
        elif argument:
            self.system_message = argument
        if self.system_message is None:
            return CommandResult("no system message")
        return CommandResult(f"system message: {self.system_message}")

    def _reset(self, _: str) -> CommandResult:
        self.history.clear()
        self.restart_seed()
        return CommandResult("history cleared")

    def _save(self, argument: str) -> CommandResult:
        if not argument:
            return CommandResult("usage: /save FILE")
        path = Path(argument).expanduser()
        try:
            write_text_atomically(path, self.history_text() + "\n")
        except OSError as error:
            return CommandResult(f"could not write {path}: {error.strerror or error}")
        return CommandResult(f"saved {len(self.history)} turns to {path}")


def describe_failure(what: str, error: Exception) -> str:
    """One line for an unexpected error: what failed, the exception's type and its message (cut short)."""
    message = " ".join(str(error).split())
    if len(message) > FAILURE_MESSAGE_CHARS:
        message = message[: FAILURE_MESSAGE_CHARS - 3] + "..."
    return f"{what} failed ({type(error).__name__}{': ' + message if message else ''})"


def _parse_setting_value(raw_value: str) -> Any:
    """A YAML scalar, as in `--set`; words like `none` or `off` unset the value."""
    text = raw_value.strip()
    if text.lower() in UNSET_WORDS:
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


class ReplView(Protocol):
    """Where the REPL shows things; the CLI renders with rich, tests record."""

    def show_reply_piece(self, text: str) -> None: ...

    def show_reply_end(self, stats: ReplyStats) -> None: ...

    def show_message(self, text: str) -> None: ...

    def show_error(self, text: str) -> None: ...


def read_prompt(read_line: Callable[[str], str]) -> str:
    """One prompt: lines ending in a backslash continue on the next one (joined by newlines)."""
    lines = [read_line(PROMPT)]
    while lines[-1].endswith(LINE_CONTINUATION):
        lines[-1] = lines[-1][: -len(LINE_CONTINUATION)]
        lines.append(read_line(CONTINUATION_PROMPT))
    return "\n".join(lines)


def run_repl(session: ChatSession, read_line: Callable[[str], str], view: ReplView) -> ReplEnd:
    """Read prompts until /quit, end of input or Ctrl-C at the prompt; Ctrl-C during a reply only stops the reply.

    `read_line(prompt)` returns one line without its newline and raises EOFError at the end of input
    and KeyboardInterrupt on Ctrl-C, as `input()` does. Returns how the REPL ended.
    """
    pending: list[str] = []
    while True:
        try:
            text = pending.pop() if pending else read_prompt(read_line)
        except EOFError:
            return "end of input"
        except KeyboardInterrupt:
            return "interrupted"
        if not text.strip():
            continue
        if text.lstrip().startswith("/"):
            # A command is one line; lines pasted or typed ahead after it are the next input.
            command, _, rest = text.lstrip().partition("\n")
            if rest.strip():
                pending.append(rest)
            if _run_command(session, command, view):
                return "quit"
            continue
        _show_reply(session, text, view)


def _run_command(session: ChatSession, command: str, view: ReplView) -> bool:
    """Run and show one slash command; whether it asks to quit. A failing command is one error line, never the end."""
    try:
        result = session.run_command(command)
    except UserError as error:
        view.show_error(str(error))
        return False
    except Exception as error:
        view.show_error(describe_failure(command.split()[0], error))
        return False
    if result.message:
        view.show_message(result.message)
    return result.quit


def _show_reply(session: ChatSession, prompt: str, view: ReplView) -> None:
    """Stream one reply into the view. Whatever goes wrong in it ends the turn with one error line and the
    session goes on with its history; Ctrl-C stops the reply only."""
    try:
        pieces = session.respond(prompt)
        try:
            for piece in pieces:
                view.show_reply_piece(piece)
        finally:
            pieces.close()
    except KeyboardInterrupt:
        pass
    except UserError as error:
        view.show_error(str(error))
        return
    except Exception as error:
        view.show_error(describe_failure("the reply", error))
        return
    if session.last_reply is not None:
        view.show_reply_end(session.last_reply)
