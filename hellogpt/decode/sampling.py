"""Sampling: pure functions from logits to token ids (temperature, top-k, top-p, greedy, the OpenAI penalties), safe at
any temperature.

Kept apart from the loops that feed the model, as in litgpt's `generate/base.py`: `chat`, training-time samples
and the server all draw through these.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Optional

import torch

from hellogpt.errors import UserError

# A divisor below float32's smallest normal number rounds to 0 (and 0/0 is NaN); such temperatures draw as
# this one does, which is already argmax for any gap between two float32 logits.
SMALLEST_TEMPERATURE = torch.finfo(torch.float32).tiny


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Finite logits divided by `temperature` (> 0), in float32 so bf16 models sample the same way.

    Never inf or NaN, whatever the temperature: where the plain quotient overflows (a temperature near 0),
    the row is first shifted so that its largest value is 0, which leaves the softmax as it is. Ordinary
    temperatures keep the plain quotient, so their draws stay exactly what they always were.
    """
    if not temperature > 0:
        raise ValueError("temperature must be > 0 here; 0 means greedy, see sample_next_token")
    logits = logits.float()
    scaled = logits / temperature
    shifted = logits - logits.max(dim=-1, keepdim=True).values
    safe = shifted / max(temperature, SMALLEST_TEMPERATURE)
    overflowed = ~torch.isfinite(scaled).all(dim=-1, keepdim=True)
    return torch.where(overflowed, safe, scaled)


def apply_penalties(
    logits: torch.Tensor, counts: Mapping[int, int], frequency_penalty: float, presence_penalty: float
) -> torch.Tensor:
    """OpenAI's frequency and presence penalties, as its API reference defines them: each token's logit minus
    `count * frequency_penalty + (count > 0) * presence_penalty`, `count` being how often the reply already holds it.

    A new float32 row (the caller's is left as it is); the same row when nothing applies.
    """
    if not counts or (frequency_penalty == 0 and presence_penalty == 0):
        return logits
    ids = torch.tensor(list(counts), dtype=torch.long, device=logits.device)
    times = torch.tensor(list(counts.values()), dtype=torch.float32, device=logits.device)
    penalised = logits.float().clone()
    penalised[ids] -= times * frequency_penalty + (times > 0).float() * presence_penalty
    return penalised


def top_p_mask(logits: torch.Tensor, top_p: Optional[float]) -> torch.Tensor:
    """Logits outside the nucleus set to -inf: the smallest set of most likely tokens whose mass reaches `top_p`.

    The most likely token is always kept, so the result can always be sampled.
    """
    if top_p is None or top_p >= 1.0:
        return logits
    sorted_logits, sorted_indices = torch.sort(logits, descending=True, dim=-1)
    sorted_probabilities = torch.softmax(sorted_logits.float(), dim=-1)
    mass_before = torch.cumsum(sorted_probabilities, dim=-1) - sorted_probabilities
    drop_sorted = mass_before >= top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, sorted_indices, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next_token(
    logits: torch.Tensor,
    *,
    temperature: float,
    top_k: Optional[int],
    top_p: Optional[float],
    generator: Optional[torch.Generator] = None,
) -> int:
    """One token id from a 1-D row of logits: argmax when temperature is 0, else a draw from the masked softmax.

    Top-k (when set) first narrows the draw to its k candidates, chosen on the logits themselves so that a huge
    temperature draws uniformly among them; top-p, the softmax and the draw then run on k values instead of the
    whole vocabulary. A tiny temperature draws like argmax. Logits that are NaN, +inf or all -inf are a
    UserError, not a draw.
    """
    check_logits(logits)
    if temperature == 0:
        return int(torch.argmax(logits))
    if top_k is not None and top_k < logits.size(-1):
        candidate_logits, candidate_ids = torch.topk(logits.float(), top_k)
    else:
        candidate_logits, candidate_ids = logits, None
    scaled = apply_temperature(candidate_logits, temperature)
    probabilities = torch.softmax(top_p_mask(scaled, top_p), dim=-1)
    choice = int(torch.multinomial(probabilities, 1, generator=generator))
    return choice if candidate_ids is None else int(candidate_ids[choice])


def check_logits(logits: torch.Tensor) -> None:
    """Scores with a NaN, a +inf or nothing above -inf come from broken weights or an overflow.

    One reduction finds all three: the row's max is NaN, +inf or -inf exactly then.
    """
    if not bool(torch.isfinite(logits.max())):
        raise UserError(
            "the model's next-token scores are NaN or infinite (diverged weights, or float16 overflow): "
            "use an earlier checkpoint, or `--set system.dtype=float32`"
        )


def greedy_tokens(rows: list[torch.Tensor], vocab_size: int) -> list[Optional[int]]:
    """Greedy picks for several rows of logits at once (one reduction, one read), each among the first
    `vocab_size` ids; None for a row that is not finite (`sample_next_token` words that failure)."""
    if len(rows) <= 1:  # a request alone: fewer calls than stacking one row
        if not rows:
            return []
        top, token = rows[0][:vocab_size].max(dim=0)
        return [int(token) if math.isfinite(top) else None]
    tops, tokens = torch.stack(rows)[:, :vocab_size].max(dim=1)
    return [token if math.isfinite(top) else None for token, top in zip(tokens.tolist(), tops.tolist())]
