"""What a request asks the scheduler for and what it hears back: sampling settings, text pieces, how it ended.

The wire format (`protocol`) and the routes (`app`) speak these types without importing the scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from hellogpt.decode.logprobs import TokenLogprob
from hellogpt.decode.sequence import FinishReason


@dataclass(frozen=True)
class SamplingSettings:
    """What one request asks for: the same knobs as `chat`'s `sample` section, plus stop strings, OpenAI's penalties,
    and log-probabilities: `logprobs` (None: none) is how many likeliest alternatives each token lists,
    `score_prompt` asks for the prompt's own tokens' too (`echo`). `max_tokens` 0 scores the prompt only."""

    max_tokens: int
    temperature: float
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    seed: Optional[int] = None
    stops: tuple[str, ...] = ()
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logprobs: Optional[int] = None
    score_prompt: bool = False


@dataclass(frozen=True)
class TextPiece:
    """Reply text, whole characters only, and (when asked) the log-probabilities of the tokens chosen since the last
    piece (a token's text may still be held back: an incomplete character, a possible stop string)."""

    text: str
    tokens: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class PromptScored:
    """The prompt's tokens with their log-probabilities (asked by `score_prompt`); it comes before any text."""

    tokens: tuple[TokenLogprob, ...]


@dataclass(frozen=True)
class Finished:
    """The sequence ended: `stop` (end-of-text token or a stop string) or `length` (max_tokens reached)."""

    reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Failed:
    """The sequence could not go on: the model failed, or the server is shutting down."""

    message: str
    code: str


Event = Union[PromptScored, TextPiece, Finished, Failed]
