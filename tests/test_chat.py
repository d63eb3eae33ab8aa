"""The chat session and the REPL, driven through their input layer (no terminal)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytest
import torch

from hellogpt.chat import CONTINUATION_PROMPT, PROMPT, ChatSession, ReplyStats, run_repl
from hellogpt.config.schema import SampleConfig
from hellogpt.data.tokenizer import CharTokenizer
from hellogpt.decode.stream import stream_tokens
from tests.test_generate import make_model

CHARS = "\n !',.?abcdefghijklmnopqrstuvwxyzé"


def make_session(seed: Optional[int] = 3, **settings) -> ChatSession:
    tokenizer = CharTokenizer(CHARS)
    model = make_model(block_size=64, vocab_size=tokenizer.vocab_size)
    config = SampleConfig(**{"max_new_tokens": 12, "temperature": 1.0, "top_k": 10, "seed": seed, **settings})
    return ChatSession(model, tokenizer, config)


class RecordingView:
    def __init__(self, interrupt_after_pieces: Optional[int] = None) -> None:
        self.events: list[tuple[str, object]] = []
        self.interrupt_after_pieces = interrupt_after_pieces
        self.pieces_seen = 0

    def show_reply_piece(self, text: str) -> None:
        self.pieces_seen += 1
        if self.pieces_seen == self.interrupt_after_pieces:
            raise KeyboardInterrupt
        self.events.append(("piece", text))

    def show_reply_end(self, stats: ReplyStats) -> None:
        self.events.append(("end", stats))

    def show_message(self, text: str) -> None:
        self.events.append(("message", text))

    def show_error(self, text: str) -> None:
        self.events.append(("error", text))

    def messages(self) -> list[str]:
        return [str(value) for kind, value in self.events if kind == "message"]


def scripted_input(*lines: object):
    """A read_line that returns `lines` in order (raising any exception given as a line), then EOF."""
    remaining = list(lines)
    prompts: list[str] = []

    def read_line(prompt: str) -> str:
        prompts.append(prompt)
        if not remaining:
            raise EOFError
        line = remaining.pop(0)
        if isinstance(line, BaseException):
            raise line
        return str(line)

    read_line.prompts = prompts  # type: ignore[attr-defined]
    return read_line


def test_a_fixed_seed_reproduces_a_reply() -> None:
    first = "".join(make_session(seed=11).respond("the raven"))
    assert first
    assert "".join(make_session(seed=11).respond("the raven")) == first
    assert "".join(make_session(seed=12).respond("the raven")) != first


def test_the_streamed_reply_equals_the_decoded_token_sequence() -> None:
    session = make_session(seed=5)
    streamed = list(session.respond("once upon"))
    tokens = stream_tokens(
        session.model, session.tokenizer.encode("once upon"), max_new_tokens=12, temperature=1.0, top_k=10,
        vocab_size=session.tokenizer.vocab_size, generator=torch.Generator().manual_seed(5),
    )
    assert "".join(streamed) == session.tokenizer.decode(list(tokens))
    assert len(streamed) == 12 and session.last_reply is not None and session.last_reply.tokens == 12


def test_set_changes_a_sampling_setting_and_refuses_invalid_values() -> None:
    session = make_session()
    session.run_command("/set temperature 0.5")
    session.run_command("/set top_p 0.9")
    assert (session.settings.temperature, session.settings.top_p) == (0.5, 0.9)
    refused = session.run_command("/set top_k -3")
    assert "top_k" in refused.message and "greater than 0" in refused.message
    assert session.settings.top_k == 10
    session.run_command("/set top_k none")
    assert session.settings.top_k is None
    assert "unknown setting" in session.run_command("/set warmth 3").message


def test_set_seed_restarts_the_sampler() -> None:
    session = make_session(seed=1)
    first = "".join(session.respond("a"))
    session.run_command("/set seed 1")
    assert "".join(session.respond("a")) == first


def test_memory_mode_puts_earlier_turns_in_the_context() -> None:
    session = make_session(temperature=0.0)
    reply = "".join(session.respond("one"))
    without_memory = "".join(session.respond("two"))
    session.run_command("/reset")
    session.run_command("/memory on")
    assert "".join(session.respond("one")) == reply
    with_memory = "".join(session.respond("two"))
    greedy_on_transcript = make_session(temperature=0.0)
    expected = "".join(greedy_on_transcript.respond(f"one{reply}\ntwo"))
    assert with_memory == expected != without_memory


def test_reset_clears_the_history() -> None:
    session = make_session()
    "".join(session.respond("hello"))
    assert len(session.history) == 1
    session.run_command("/reset")
    assert session.history == []


def test_save_writes_the_transcript(tmp_path: Path) -> None:
    session = make_session()
    reply = "".join(session.respond("hello there"))
    target = tmp_path / "chat.md"
    result = session.run_command(f"/save {target}")
    assert "saved 1 turns" in result.message
    text = target.read_text("utf-8")
    assert "hello there" in text and reply in text
    assert [path.name for path in tmp_path.iterdir()] == ["chat.md"]


def test_info_describes_the_model() -> None:
    info = make_session().run_command("/info").message
    assert "2 layers x 32 wide" in info and "64 tokens" in info and "char tokenizer" in info


def test_unknown_commands_get_a_hint() -> None:
    assert "/help" in make_session().run_command("/frobnicate").message


def test_repl_runs_commands_and_replies_until_end_of_input() -> None:
    session = make_session()
    view = RecordingView()
    ended = run_repl(session, scripted_input("/help", "the cat", "", "   ", "/set max_new_tokens 3", "a dog"), view)
    assert ended == "end of input"
    assert "/memory on|off" in view.messages()[0]
    assert [turn.prompt for turn in session.history] == ["the cat", "a dog"]
    ends = [value for kind, value in view.events if kind == "end"]
    assert [stats.tokens for stats in ends] == [12, 3]


def test_repl_joins_lines_ending_in_a_backslash() -> None:
    session = make_session()
    read_line = scripted_input("first line\\", "second\\", "third", "/quit", "never read")
    run_repl(session, read_line, RecordingView())
    assert [turn.prompt for turn in session.history] == ["first line\nsecond\nthird"]
    assert read_line.prompts == [PROMPT, CONTINUATION_PROMPT, CONTINUATION_PROMPT, PROMPT]


def test_commands_pasted_with_other_lines_run_one_by_one() -> None:
    session = make_session()
    view = RecordingView()
    run_repl(session, scripted_input("/set max_new_tokens 4\n/memory on\nthe cat\nsat"), view)
    assert session.settings.max_new_tokens == 4 and session.memory
    assert [turn.prompt for turn in session.history] == ["the cat\nsat"]


def test_ctrl_c_during_a_reply_stops_it_and_returns_to_the_prompt() -> None:
    session = make_session()
    view = RecordingView(interrupt_after_pieces=3)
    run_repl(session, scripted_input("the raven", "again"), view)
    first, second = session.history
    shown = "".join(str(value) for kind, value in view.events[:2])
    assert first.stats.interrupted and first.stats.tokens == 3 and first.reply.startswith(shown)
    assert view.events[2][0] == "end"
    assert not second.stats.interrupted and second.stats.tokens == 12


def test_ctrl_c_at_the_prompt_ends_the_repl() -> None:
    session = make_session()
    read_line = scripted_input(KeyboardInterrupt(), "never read")
    assert run_repl(session, read_line, RecordingView()) == "interrupted"
    assert session.history == [] and len(read_line.prompts) == 1


def test_characters_outside_the_vocabulary_are_an_error_not_a_crash() -> None:
    session = make_session()
    view = RecordingView()
    run_repl(session, scripted_input("QUOTH", "ok"), view)
    errors = [value for kind, value in view.events if kind == "error"]
    assert len(errors) == 1 and "not in this char-level vocabulary" in str(errors[0])
    assert [turn.prompt for turn in session.history] == ["ok"]


def test_a_context_longer_than_the_model_is_noticed_once() -> None:
    notices: list[str] = []
    session = make_session(temperature=0.0)
    session.on_notice = notices.append
    session.run_command("/memory on")
    for _ in range(3):
        "".join(session.respond("a" * 40))
    assert len(notices) == 1 and "64 tokens" in notices[0]


@pytest.mark.parametrize("command", ["/quit", "/exit"])
def test_quit_ends_the_repl(command: str) -> None:
    read_line = scripted_input(command, "never read")
    assert run_repl(make_session(), read_line, RecordingView()) == "quit"
    assert len(read_line.prompts) == 1


def make_chat_session(block_size: int = 256, **fields: object) -> ChatSession:
    """A chat model (the bigram model of tests/chat_models.py: it answers 'hi.' and ends its turn), memory on."""
    from hellogpt.data.chat_template import CHATML_TEMPLATE
    from tests.chat_models import bigram_chat_model, chat_char_tokenizer

    tokenizer = chat_char_tokenizer()
    config = SampleConfig(max_new_tokens=20, temperature=0.0, seed=1)
    return ChatSession(
        bigram_chat_model(tokenizer, block_size=block_size), tokenizer, config, memory=True, chat_template=CHATML_TEMPLATE, **fields
    )


def recorded_prompts(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The prompt ids of every reply the chat session asks for from now on."""
    import hellogpt.chat

    prompts: list[list[int]] = []

    def recording(model, prompt_ids, **options):
        prompts.append(list(prompt_ids))
        return stream_tokens(model, prompt_ids, **options)

    monkeypatch.setattr(hellogpt.chat, "stream_tokens", recording)
    return prompts


def test_the_repl_with_a_chat_model_stops_each_reply_at_the_end_of_its_turn() -> None:
    session = make_chat_session()
    view = RecordingView()
    run_repl(session, scripted_input("hello", "and again?"), view)
    assert [turn.reply for turn in session.history] == ["hi.", "hi."]
    ends = [value for kind, value in view.events if kind == "end"]
    assert [stats.tokens for stats in ends] == [3, 3]  # not max_new_tokens (20): <|im_end|> ended each


def test_a_chat_model_is_given_the_conversation_as_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    from hellogpt.data.chat_template import render_prompt

    prompts = recorded_prompts(monkeypatch)
    session = make_chat_session()
    view = RecordingView()
    run_repl(session, scripted_input("/system be brief", "hello", "why?", "/memory off", "once"), view)
    system = {"role": "system", "content": "be brief"}
    assert prompts == [
        render_prompt([system, {"role": "user", "content": "hello"}], session.tokenizer),
        render_prompt([system, {"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi."},
                       {"role": "user", "content": "why?"}], session.tokenizer),
        render_prompt([system, {"role": "user", "content": "once"}], session.tokenizer),
    ]


def test_history_shows_a_chat_models_messages() -> None:
    session = make_chat_session(system_message="be brief")
    "".join(session.respond("hello"))
    assert session.run_command("/history").message == "### system\nbe brief\n\n### user\nhello\n\n### assistant\nhi."
    assert session.run_command("/system none").message == "no system message"
    assert session.run_command("/history").message == "### user\nhello\n\n### assistant\nhi."


def test_a_base_model_has_no_system_message() -> None:
    session = make_session()
    assert "base model" in session.run_command("/system be brief").message
    assert session.system_message is None
    assert "continues it" in session.run_command("/help").message
    assert "answers" in make_chat_session().run_command("/help").message


def test_a_long_conversation_leaves_out_its_oldest_turns_and_keeps_the_system_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hellogpt.data.chat_template import render_prompt

    prompts = recorded_prompts(monkeypatch)
    notices: list[str] = []
    session = make_chat_session(block_size=120, system_message="be brief", on_notice=notices.append)
    for index in range(4):
        "".join(session.respond(f"question {'abcd'[index]}"))
    system = {"role": "system", "content": "be brief"}
    last_two = [{"role": "user", "content": "question c"}, {"role": "assistant", "content": "hi."},
                {"role": "user", "content": "question d"}]
    assert prompts[-1] == render_prompt([system, *last_two], session.tokenizer)
    assert all(len(ids) <= 120 - 20 for ids in prompts)  # room for max_new_tokens
    assert [reply.reply for reply in session.history] == ["hi."] * 4
    assert len(notices) == 1 and "oldest turns are left out" in notices[0]
