"""Stop strings over streamed text: the reply ends before the stop string, which never shows, even in part."""

from __future__ import annotations

from hellogpt.decode.stops import StopMatcher


def shown(stops: list[str], pieces: list[str]) -> tuple[list[str], bool]:
    matcher = StopMatcher(stops)
    out = [matcher.push(piece) for piece in pieces]
    out.append(matcher.flush())
    return out, matcher.stopped


def test_text_without_stop_strings_passes_through_unchanged() -> None:
    assert shown([], ["ab", "c"]) == (["ab", "c", ""], False)


def test_the_text_ends_just_before_a_stop_string() -> None:
    out, stopped = shown(["END"], ["one END two"])
    assert "".join(out) == "one " and stopped


def test_a_stop_string_split_across_pieces_is_held_back_and_never_shown() -> None:
    out, stopped = shown(["\nuser:"], ["hi\nus", "er: more"])
    assert out[0] == "hi"  # "\nus" could be the start of the stop string
    assert "".join(out) == "hi" and stopped


def test_a_held_tail_that_turns_out_not_to_stop_is_released() -> None:
    out, stopped = shown(["\nuser:"], ["hi\nus", "ually"])
    assert out == ["hi", "\nusually", ""] and not stopped


def test_held_text_comes_out_when_the_reply_ends() -> None:
    out, stopped = shown(["\nuser:"], ["bye\nuse"])
    assert "".join(out) == "bye\nuse" and not stopped


def test_the_earliest_of_several_stop_strings_wins() -> None:
    out, _ = shown(["cd", "b"], ["abcd"])
    assert "".join(out) == "a"


def test_nothing_is_shown_after_a_stop() -> None:
    matcher = StopMatcher(["x"])
    assert matcher.push("axb") == "a"
    assert matcher.push("more") == "" and matcher.flush() == ""
