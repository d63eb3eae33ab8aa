"""The conversation format: how messages and earlier turns become the text a plain language model continues."""

from __future__ import annotations

import pytest

from hellogpt.data.conversation import TRANSCRIPT_STOPS, continued_text, prompt_or_end_of_text, render_transcript
from hellogpt.data.tokenizer import CharTokenizer, gpt2_tokenizer
from hellogpt.errors import UserError
from hellogpt.gpt2 import GPT2_END_OF_TEXT_ID


def test_messages_become_role_lines_ending_where_the_assistant_speaks() -> None:
    prompt = render_transcript([("system", "be brief"), ("user", "hello"), ("assistant", "hi"), ("user", "who?")])
    assert prompt == "system: be brief\nuser: hello\nassistant: hi\nuser: who?\nassistant:"


def test_the_reply_stops_where_the_model_would_speak_for_the_user() -> None:
    transcript = render_transcript([("user", "hello"), ("assistant", "hi"), ("user", "who?")])
    assert transcript.count(TRANSCRIPT_STOPS[0]) == 1  # the second user turn; the first opens the text
    assert transcript.index(TRANSCRIPT_STOPS[0]) == len("user: hello\nassistant: hi")


def test_earlier_turns_are_the_text_they_made_each_ending_a_line() -> None:
    assert continued_text([("Once upon", " a time"), ("The end", ".")], "Again") == "Once upon a time\nThe end.\nAgain"
    assert continued_text([], "Alone") == "Alone"


def test_an_empty_prompt_is_the_end_of_text_token_where_the_tokenizer_has_one() -> None:
    assert prompt_or_end_of_text([], gpt2_tokenizer()) == [GPT2_END_OF_TEXT_ID]
    assert prompt_or_end_of_text([5, 6], gpt2_tokenizer()) == [5, 6]


def test_an_empty_prompt_without_an_end_of_text_token_is_a_user_error() -> None:
    with pytest.raises(UserError, match="the prompt is empty"):
        prompt_or_end_of_text([], CharTokenizer("abc"))


def test_a_chat_model_gets_the_turns_rendered_by_its_template_developer_as_system() -> None:
    from hellogpt.data.chat_template import render_prompt
    from hellogpt.data.conversation import render_chat_turns
    from tests.chat_models import chat_char_tokenizer

    tokenizer = chat_char_tokenizer()
    turns = [("developer", "be brief."), ("user", "hello")]
    expected = [{"role": "system", "content": "be brief."}, {"role": "user", "content": "hello"}]
    assert render_chat_turns(turns, tokenizer) == render_prompt(expected, tokenizer)
