"""OpenAI's frequency and presence penalties: logit -= count * frequency + (count > 0) * presence, over the reply."""

from __future__ import annotations

import torch

from hellogpt.decode.sampling import apply_penalties
from hellogpt.decode.sequence import DecodingSequence


def test_the_penalty_is_openais_formula_and_leaves_the_input_alone() -> None:
    logits = torch.tensor([1.0, 2.0, 3.0, 4.0])
    penalised = apply_penalties(logits, {1: 3, 3: 1}, frequency_penalty=0.5, presence_penalty=-1.0)
    assert penalised.tolist() == [1.0, 2.0 - 1.5 + 1.0, 3.0, 4.0 - 0.5 + 1.0]
    assert logits.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert apply_penalties(logits, {}, 2.0, 2.0) is logits


def test_a_sequence_counts_only_its_reply_and_greedy_follows_the_penalty() -> None:
    logits = torch.tensor([0.0, 5.0, 4.0, 0.0])
    sequence = DecodingSequence(
        [1, 1, 1], block_size=8, vocab_size=4, max_tokens=4, temperature=0.0, frequency_penalty=2.0
    )
    assert not sequence.greedy  # the batch's plain argmax would skip the penalty
    assert sequence.choose(logits) == 1  # the prompt's ones do not count
    sequence.accept(1)
    assert sequence.choose(logits) == 2  # 5 - 2 < 4
    plain = DecodingSequence([1], block_size=8, vocab_size=4, max_tokens=4, temperature=0.0)
    assert plain.greedy
