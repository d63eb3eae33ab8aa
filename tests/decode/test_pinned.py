"""Today's greedy decoding pinned on a seeded tiny model: reshaping the engine must not move a token or a logit.

The ids and logits were recorded before the decoding engine became one package (`hellogpt.decode`); the window
slides twice in 70 tokens of a 32-token block.
"""

from __future__ import annotations

import pytest
import torch

from hellogpt.decode import sequence, stream
from tests.test_generate import make_model

PROMPT = [3, 1, 4, 1, 5]
GREEDY_IDS = [
    33, 32, 20, 32, 8, 17, 13, 20, 28, 3, 34, 39, 11, 32, 21, 14, 1, 3, 14, 3, 14, 17, 34, 11, 3, 14, 17, 3, 39, 11,
    21, 21, 3, 11, 3, 14, 3, 14, 17, 14, 11, 3, 14, 17, 34, 39, 11, 32, 21, 3, 3, 3, 14, 3, 14, 17, 21, 3, 3, 14,
    17, 34, 39, 11, 32, 21, 3, 3, 3, 14,
]
FIRST_LOGITS = [
    -0.018725, 0.082359, -0.15926, -0.017188, 0.011543, 0.080688, -0.01264, -0.155131, 0.122834, -0.211267,
    -0.108339, -0.006159, 0.080404, 0.170306, -0.166679, 0.083314, 0.024123, 0.094822, 0.076859, -0.075373,
    0.034333, 0.072153, 0.043078, 0.133722, -0.107816, -0.104787, 0.084764, -0.151939, 0.049116, -0.063406,
    0.066321, 0.109378, 0.152084, 0.174933, -0.059819, 0.049938, -0.055104, 0.000957, 0.033439, -0.108672,
]
LAST_LOGITS = [
    0.085537, 0.015362, -0.050076, 0.035203, -0.182684, 0.104436, -0.069561, 0.147222, -0.179599, -0.209942,
    -0.170304, -0.129238, -0.2214, 0.023169, 0.177313, 0.067226, 0.055404, -0.016666, -0.018101, -0.119704,
    -0.068097, -0.029115, -0.176906, 0.104581, -0.232047, 0.047395, -0.003692, -0.002014, 0.171531, -0.055284,
    -0.021126, 0.016939, -0.016897, 0.172022, 0.169206, -0.001114, -0.095474, -0.005733, 0.02165, 0.103497,
]


def test_greedy_ids_and_logits_are_those_recorded_before_the_engine_was_reshaped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = make_model(block_size=32, vocab_size=40).requires_grad_(False)
    seen: list[torch.Tensor] = []
    original = sequence.sample_next_token

    def recording(logits: torch.Tensor, **settings: object) -> int:
        seen.append(logits.clone())
        return original(logits, **settings)

    monkeypatch.setattr(sequence, "sample_next_token", recording)
    ids = list(stream.stream_tokens(model, PROMPT, max_new_tokens=70, temperature=0.0, vocab_size=40))
    assert ids == GREEDY_IDS
    torch.testing.assert_close(seen[0], torch.tensor(FIRST_LOGITS), rtol=0, atol=2e-6)
    torch.testing.assert_close(seen[-1], torch.tensor(LAST_LOGITS), rtol=0, atol=2e-6)
