"""`serve`'s fp32 scoring copy (hellogpt.model_source.float32_scoring_model): made only when decoding is not fp32,
and left with the original fp32 weights after the decoding model is made from the loaded one in place."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from hellogpt.data.tokenizer import CharTokenizer
from hellogpt.decode.logprobs import ContextScorer
from hellogpt.model.quantize import is_quantized
from hellogpt.model_source import LoadedModel, float32_scoring_model, model_for_inference
from tests.test_generate import make_model


def loaded_and_config(quantize: str, dtype: str) -> tuple[LoadedModel, SimpleNamespace]:
    tokenizer = CharTokenizer("abc")
    loaded = LoadedModel(make_model(block_size=8, vocab_size=tokenizer.vocab_size), tokenizer, "tiny", {}, None)
    return loaded, SimpleNamespace(system=SimpleNamespace(device="cpu", dtype=dtype, quantize=quantize, measure="off"))


def test_an_int8_server_keeps_the_fp32_weights_to_score_with() -> None:
    loaded, config = loaded_and_config("int8", "auto")
    original = {name: value.clone() for name, value in loaded.model.state_dict().items()}
    scoring = float32_scoring_model(loaded, config)
    decoding = model_for_inference(loaded, config, choose_threads=False)
    assert scoring is not None and is_quantized(decoding) and not is_quantized(scoring)
    assert all(torch.equal(scoring.state_dict()[name], value) for name, value in original.items())


def test_an_fp32_server_scores_with_its_decoding_model() -> None:
    assert float32_scoring_model(*loaded_and_config("none", "float32")) is None


def test_the_context_scorer_gives_the_full_forwards_logits_as_the_context_grows_and_slides() -> None:
    model = make_model(block_size=8, vocab_size=5).eval()
    scorer = ContextScorer(model)
    contexts = [[1, 2, 3], [1, 2, 3, 4], [1, 2, 3, 4, 0], [3, 4, 0, 2], [3, 4, 0, 2, 1]]  # the fourth: a slid window
    for context in contexts:
        with torch.no_grad():
            expected = model(torch.tensor([context]))[0][0, -1]
        assert torch.allclose(scorer.next_logits(context), expected, atol=1e-5)
