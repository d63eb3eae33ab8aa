"""One sequence being decoded: its window of context, its sampler, its end conditions and its text.

Whatever runs the model (`hellogpt.decode.stream` for one sequence, the server's scheduler for many) keeps one of
these per sequence and asks it what to feed, whether its window must slide, which token the logits give, and
whether the sequence has ended; the rules live here once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable, Literal, Optional

import torch

from hellogpt.decode.sampling import apply_penalties, sample_next_token
from hellogpt.decode.stops import StopMatcher
from hellogpt.decode.text import StreamingDecoder, TokenBytes

# When the context outgrows block_size, the cache restarts from the most recent half of it:
# one prefill of block_size/2 tokens buys block_size/2 cheap decoding steps, so the re-prefill
# costs a few percent of the decoding time while the model still sees at least half a window.
SLIDE_KEEP_FRACTION = 0.5
FinishReason = Literal["stop", "length"]


class DecodingSequence:
    """A prompt's continuation: `context` is what the model sees (at most `block_size` tokens), `produced` the reply's
    token count, `finish_reason` set once it ended (`stop`: end-of-text or a stop string; `length`: `max_tokens`).

    Only ids below `vocab_size` (the tokenizer's size) are ever drawn: a model's vocabulary is often padded past its
    tokenizer's (50304 over GPT-2's 50257) and the padding ids decode to nothing. With `text` (the tokenizer), each
    accepted token also gives the reply's next piece of text, whole characters only, with `stops` cut out.
    `on_window_slide(dropped_tokens)` is called the first time tokens fall out of the context.
    """

    def __init__(
        self,
        prompt_ids: Sequence[int],
        *,
        block_size: int,
        vocab_size: int,
        max_tokens: int,
        temperature: float,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        generator: Optional[torch.Generator] = None,
        eot_id: Optional[int] = None,
        stops: Sequence[str] = (),
        text: Optional[TokenBytes] = None,
        on_window_slide: Optional[Callable[[int], None]] = None,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
    ) -> None:
        if not prompt_ids:
            raise ValueError("the prompt is empty: give at least one token")
        if vocab_size <= 0:
            raise ValueError(f"vocab_size must be the tokenizer's size (> 0), got {vocab_size}")
        self.block_size = block_size
        self.vocab_size = vocab_size
        self.max_tokens = max_tokens
        self.temperature, self.top_k, self.top_p, self.generator = temperature, top_k, top_p, generator
        self.eot_id = eot_id
        self.frequency_penalty, self.presence_penalty = frequency_penalty, presence_penalty
        self._counts: dict[int, int] = {}  # the reply's tokens and how often each came (what the penalties weigh)
        self.produced = 0
        self.finish_reason: Optional[FinishReason] = None
        self._keep = max(1, int(block_size * SLIDE_KEEP_FRACTION))
        self._on_window_slide = on_window_slide
        self._slid = False
        self._decoder = StreamingDecoder(text) if text is not None else None
        self._stops = StopMatcher(stops)
        self.context = list(prompt_ids)
        if len(self.context) > block_size:
            self._dropped(len(self.context) - block_size)
            self.context = self.context[-block_size:]

    @property
    def greedy(self) -> bool:
        """Whether the next token is the argmax of the raw logits (which a batch may pick for many sequences at once):
        temperature 0 and no penalty."""
        return self.temperature == 0 and self.frequency_penalty == 0 and self.presence_penalty == 0

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def window_is_full(self, cached_positions: int) -> bool:
        """Whether the model has seen a whole block: the next token needs the window slid first."""
        return cached_positions >= self.block_size

    def slide_window(self) -> list[int]:
        """Keep the most recent part of the context (`SLIDE_KEEP_FRACTION` of a block); the tokens to prefill again."""
        if not self._slid:
            self._dropped(len(self.context) - self._keep)
        self.context = self.context[-self._keep :]
        return self.context

    def choose(self, logits: torch.Tensor) -> int:
        """The next token from the model's logits for it, by this sequence's sampling settings."""
        logits = apply_penalties(logits[: self.vocab_size], self._counts, self.frequency_penalty, self.presence_penalty)
        return sample_next_token(
            logits, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
            generator=self.generator,
        )

    def accept(self, token: int) -> str:
        """Take the chosen token: the reply's text it completes (empty without a tokenizer, or while a character or a
        possible stop string is incomplete). End-of-text ends the sequence without joining the reply."""
        if token == self.eot_id:
            return self._finish("stop")
        self.produced += 1
        self.context.append(token)
        self._counts[token] = self._counts.get(token, 0) + 1
        piece = self._stops.push(self._decoder.push(token)) if self._decoder is not None else ""
        if self._stops.stopped:
            return piece + self._finish("stop")
        if self.produced >= self.max_tokens:
            return piece + self._finish("length")
        return piece

    def _finish(self, reason: FinishReason) -> str:
        """End the sequence; the text held back until now (a truncated character, the start of a stop string)."""
        tail = ""
        if self._decoder is not None:
            tail = self._stops.push(self._decoder.flush()) + self._stops.flush()
        self.finish_reason = "stop" if self._stops.stopped else reason
        return tail

    def _dropped(self, tokens: int) -> None:
        if not self._slid and self._on_window_slide is not None:
            self._on_window_slide(tokens)
        self._slid = True
