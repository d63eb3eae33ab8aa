"""The chat transcript: how messages become the prompt a plain language model continues."""

from __future__ import annotations

from hellogpt.serve.template import TRANSCRIPT_STOPS, render_transcript


def test_messages_become_role_lines_ending_where_the_assistant_speaks() -> None:
    prompt = render_transcript([("system", "be brief"), ("user", "hello"), ("assistant", "hi"), ("user", "who?")])
    assert prompt == "system: be brief\nuser: hello\nassistant: hi\nuser: who?\nassistant:"


def test_the_reply_stops_where_the_model_would_speak_for_the_user() -> None:
    assert TRANSCRIPT_STOPS == ("\nuser:",)
