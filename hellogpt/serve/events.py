"""What a request asks the scheduler for and what it hears back: sampling settings, text pieces, how it ended.

The wire format (`protocol`) and the routes (`app`) speak these types without importing the scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from hellogpt.decode.sequence import FinishReason


@dataclass(frozen=True)
class SamplingSettings:
    """What one request asks for: the same knobs as `chat`'s `sample` section, plus stop strings."""

    max_tokens: int
    temperature: float
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    seed: Optional[int] = None
    stops: tuple[str, ...] = ()


@dataclass(frozen=True)
class TextPiece:
    """Reply text, whole characters only."""

    text: str


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


Event = Union[TextPiece, Finished, Failed]
