"""Log-probabilities of tokens under the model: what the OpenAI API's `logprobs` and `echo` report.

They are the model's own distribution, the log-softmax of its raw logits in float32 over all of its outputs (as
`hellogpt eval`'s cross-entropy), before temperature, top-k, top-p and the penalties shape the draw: a harness that
scores continuations gets the same numbers whatever sampling settings the request carries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import torch

from hellogpt.model.gpt import GPT


@dataclass(frozen=True)
class TokenLogprob:
    """One token of a prompt or a reply: its id, its log-probability given what came before (None for a prompt's
    first token, which nothing predicts), and the `top` most likely ids there with theirs, most likely first."""

    token: int
    logprob: Optional[float]
    top: tuple[tuple[int, float], ...] = ()


def score_token(logits: torch.Tensor, token: int, top: int, vocab_size: int) -> TokenLogprob:
    """The chosen `token`'s log-probability under one row of logits, and the `top` likeliest ids (below
    `vocab_size`, the tokenizer's: a padded vocabulary's extra ids are never candidates)."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return TokenLogprob(token, float(logprobs[token]), _top(logprobs, top, vocab_size))


@torch.inference_mode()
def score_prompt(model: GPT, prompt_ids: Sequence[int], top: int, vocab_size: int) -> list[TokenLogprob]:
    """Every prompt token's log-probability given the ones before it, from one forward pass over the whole prompt
    (the computation `hellogpt eval` sums); the first token's is None."""
    device = model.transformer.wte.weight.device
    ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)
    logits, _ = model(ids)
    logprobs = torch.log_softmax(logits[0].float(), dim=-1)
    scored = [TokenLogprob(int(prompt_ids[0]), None)]
    chosen = logprobs[:-1].gather(1, ids[0, 1:, None])[:, 0].tolist()
    for position, token in enumerate(prompt_ids[1:]):
        scored.append(TokenLogprob(int(token), chosen[position], _top(logprobs[position], top, vocab_size)))
    return scored


def _top(logprobs: torch.Tensor, top: int, vocab_size: int) -> tuple[tuple[int, float], ...]:
    if top <= 0:
        return ()
    values, ids = torch.topk(logprobs[:vocab_size], min(top, vocab_size))
    return tuple(zip(ids.tolist(), values.tolist()))
