"""Log-probabilities of tokens under the model: what the OpenAI API's `logprobs` and `echo` report.

They are the model's own distribution, the log-softmax of its raw logits in float32 (as `hellogpt eval`'s
cross-entropy), before temperature, top-k, top-p and the penalties shape the draw: a harness that scores
continuations gets the same numbers whatever sampling settings the request carries. The distribution is over the
tokenizer's ids, as the sampler draws and as `hellogpt export` writes the model: a vocabulary padded past the
tokenizer's (GPT-2's 50304 over 50257) has its padding cut, which `eval` keeps (a trained model gives those ids
next to no mass).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import torch

from hellogpt.decode.cache import BatchedKVCache, prefill_slot
from hellogpt.model.gpt import GPT


@dataclass(frozen=True)
class TokenLogprob:
    """One token of a prompt or a reply: its id, its log-probability given what came before (None for a prompt's
    first token, which nothing predicts), and the `top` most likely ids there with theirs, most likely first."""

    token: int
    logprob: Optional[float]
    top: tuple[tuple[int, float], ...] = ()


def score_token(logits: torch.Tensor, token: int, top: int, vocab_size: int) -> TokenLogprob:
    """The chosen `token`'s log-probability under one row of logits, and the `top` likeliest ids, over the first
    `vocab_size` ids (the tokenizer's)."""
    logprobs = torch.log_softmax(logits[:vocab_size].float(), dim=-1)
    return TokenLogprob(token, float(logprobs[token]), _top(logprobs, top))


@torch.inference_mode()
def score_prompt(model: GPT, prompt_ids: Sequence[int], top: int, vocab_size: int) -> list[TokenLogprob]:
    """Every prompt token's log-probability given the ones before it, from one forward pass over the whole prompt
    (the computation `hellogpt eval` sums); the first token's is None."""
    device = model.input_embeddings().weight.device
    ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)
    logits, _ = model(ids)
    logprobs = torch.log_softmax(logits[0, :, :vocab_size].float(), dim=-1)
    scored = [TokenLogprob(int(prompt_ids[0]), None)]
    chosen = logprobs[:-1].gather(1, ids[0, 1:, None])[:, 0].tolist()
    for position, token in enumerate(prompt_ids[1:]):
        scored.append(TokenLogprob(int(token), chosen[position], _top(logprobs[position], top)))
    return scored


class ContextScorer:
    """Next-token logits of one growing context from a scoring model (the fp32 copy a bf16 or int8 server keeps),
    through a one-slot KV cache of its own: a context that grew by one token since the last call costs one cached
    step, any other (the first call, a window that slid) a prefill of the whole context."""

    def __init__(self, model: GPT) -> None:
        self.model = model
        self._cache: Optional[BatchedKVCache] = None  # made on first use: only sequences that ask for scores pay it
        self._cached: list[int] = []  # the tokens the cache holds

    @torch.inference_mode()
    def next_logits(self, context: Sequence[int]) -> torch.Tensor:
        """The logits that follow `context` (at most the model's block size of tokens)."""
        if self._cache is None:
            self._cache = BatchedKVCache(self.model, slots=1)
        cached = len(self._cached)
        if 0 < cached == len(context) - 1 and list(context[:cached]) == self._cached:
            device = self._cache.keys.device
            ids = torch.tensor([[int(context[-1])]], dtype=torch.long, device=device)
            logits = self.model.next_token_logits(ids, self._cache.sequences(0))[0]
        else:
            self._cached = []
            logits = prefill_slot(self.model, self._cache, 0, context)
        self._cached = [int(token) for token in context]
        return logits


def _top(logprobs: torch.Tensor, top: int) -> tuple[tuple[int, float], ...]:
    if top <= 0:
        return ()
    values, ids = torch.topk(logprobs, min(top, logprobs.size(-1)))
    return tuple(zip(ids.tolist(), values.tolist()))
