"""Sampling masks, the streaming generator with its KV cache and sliding window, and the streaming decoder."""

from __future__ import annotations

import math

import pytest
import torch

from hellogpt import generate
from hellogpt.data.tokenizer import CharTokenizer, gpt2_tokenizer
from hellogpt.errors import UserError
from hellogpt.decode.cache import BatchedKVCache, prefill_slot
from hellogpt.decode.sampling import sample_next_token, top_p_mask
from hellogpt.decode.step import DecodingModel, decode_step
from hellogpt.decode.sequence import SLIDE_KEEP_FRACTION
from hellogpt.decode.stream import stream_tokens
from hellogpt.decode.text import StreamingDecoder, stream_text
from hellogpt.model.gpt import GPT, GPTConfig

NEG_INF = float("-inf")


def make_model(block_size: int = 32, vocab_size: int = 40, seed: int = 0) -> GPT:
    """A tiny GPT that does not just repeat its last token (tied embeddings make a random one do that):
    positions and blocks get large weights."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=block_size, vocab_size=vocab_size, bias=True, dropout=0.0, arch="gpt2"))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "wpe" in name or ".attn." in name or ".mlp." in name:
                parameter.normal_(0.0, 1.0)
    return model.eval()


def greedy_without_cache(model: GPT, prompt: list[int], new_tokens: int) -> list[int]:
    """Reference: the full forward on the visible window every step, following the documented window policy."""
    block_size = model.config.block_size
    keep = max(1, int(block_size * SLIDE_KEEP_FRACTION))
    context, start, produced = list(prompt), max(0, len(prompt) - block_size), []
    with torch.no_grad():
        for _ in range(new_tokens):
            if len(context) - start > block_size:
                start = len(context) - keep
            logits, _ = model(torch.tensor([context[start:]]))
            token = int(logits[0, -1].argmax())
            produced.append(token)
            context.append(token)
    return produced


def greedy(model: GPT, prompt: list[int], new_tokens: int, **kwargs) -> list[int]:
    return list(stream_tokens(
        model, prompt, max_new_tokens=new_tokens, temperature=0.0, vocab_size=model.config.vocab_size, **kwargs
    ))


def test_top_p_mask_keeps_the_smallest_set_reaching_the_mass() -> None:
    logits = torch.log(torch.tensor([0.05, 0.5, 0.15, 0.3]))
    kept = lambda top_p: [not math.isinf(value) for value in top_p_mask(logits, top_p).tolist()]  # noqa: E731
    assert kept(0.6) == [False, True, False, True]
    assert kept(0.9) == [False, True, True, True]
    assert kept(0.01) == [False, True, False, False]
    assert kept(1.0) == [True, True, True, True]


def test_temperature_zero_is_argmax() -> None:
    logits = torch.tensor([0.1, 2.0, 1.9, -3.0])
    assert sample_next_token(logits, temperature=0.0, top_k=None, top_p=None) == 1


def test_sampling_draws_only_inside_top_k_and_top_p() -> None:
    logits = torch.log(torch.tensor([0.05, 0.4, 0.15, 0.3, 0.1]))
    generator = torch.Generator().manual_seed(0)
    draws = lambda **masks: {  # noqa: E731
        sample_next_token(logits, temperature=1.0, generator=generator, **masks) for _ in range(300)
    }
    assert draws(top_k=2, top_p=None) == {1, 3}
    assert draws(top_k=None, top_p=0.8) == {1, 2, 3}
    assert draws(top_k=None, top_p=None) == {0, 1, 2, 3, 4}


def test_greedy_with_the_cache_equals_greedy_without_it() -> None:
    model = make_model(block_size=32)
    prompt = [3, 1, 4, 1, 5, 9]
    tokens = greedy(model, prompt, 20)
    assert len(set(tokens)) > 3, "the test model should not repeat one token"
    assert tokens == greedy_without_cache(model, prompt, 20)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_lean_decoding_step_gives_the_models_own_cached_logits_bit_for_bit(dtype: torch.dtype) -> None:
    model = generate.prepare_for_inference(make_model(block_size=64), torch.device("cpu"), dtype)
    prompt = [3, 1, 4, 1, 5, 9]
    plain_cache = BatchedKVCache(model, slots=1, max_length=40).sequences()
    lean_cache, decoding = BatchedKVCache(model, slots=1, max_length=40), DecodingModel(model)
    with torch.inference_mode():
        plain = [model.next_token_logits(torch.tensor([prompt]), plain_cache)[0]]
        plain += [model.next_token_logits(torch.tensor([[token]]), plain_cache)[0] for token in range(1, 30)]
    lean = [prefill_slot(model, lean_cache, 0, prompt)]
    lean += [decode_step(decoding, lean_cache, {0: token})[0] for token in range(1, 30)]
    assert all(torch.equal(mine, theirs) for mine, theirs in zip(lean, plain))


def test_a_fixed_seed_reproduces_the_sample_and_another_seed_differs() -> None:
    model = make_model()
    sample = lambda seed: list(  # noqa: E731
        stream_tokens(model, [1, 2], max_new_tokens=25, temperature=1.0, top_k=20, vocab_size=40,
                      generator=torch.Generator().manual_seed(seed))
    )
    assert sample(7) == sample(7)
    assert sample(7) != sample(8)


def test_generation_stops_at_end_of_text() -> None:
    model = make_model()
    tokens = greedy(model, [5, 6, 7], 10)
    eot = tokens[3]
    assert greedy(model, [5, 6, 7], 10, eot_id=eot) == tokens[: tokens.index(eot)]


def test_generating_past_block_size_slides_the_window_and_reports_it_once() -> None:
    model = make_model(block_size=16)
    reports: list[int] = []
    tokens = greedy(model, [1, 2, 3, 4], 40, on_window_slide=reports.append)
    assert len(tokens) == 40
    assert tokens == greedy_without_cache(model, [1, 2, 3, 4], 40)
    assert len(reports) == 1


def test_a_prompt_longer_than_block_size_keeps_its_most_recent_tokens() -> None:
    model = make_model(block_size=16)
    prompt = [index % 40 for index in range(50)]
    reports: list[int] = []
    tokens = greedy(model, prompt, 12, on_window_slide=reports.append)
    assert reports == [50 - 16]
    assert tokens == greedy_without_cache(model, prompt[-16:], 12)


def test_the_streaming_decoder_never_prints_half_a_character() -> None:
    utf8 = "né 🙂".encode("utf-8")

    class OneBytePerToken:
        def token_bytes(self, token_id: int) -> bytes:
            return utf8[token_id : token_id + 1]

    decoder = StreamingDecoder(OneBytePerToken())
    pieces = [decoder.push(index) for index in range(len(utf8))]
    assert pieces == ["n", "", "é", " ", "", "", "", "🙂"]
    assert decoder.flush() == ""


def test_streamed_text_equals_the_tokenizers_decode() -> None:
    tokenizer = gpt2_tokenizer()
    ids = tokenizer.encode("Façade 世界 🙂 — naïve “quotes”")
    pieces = list(stream_text(tokenizer, iter(ids)))
    assert "".join(pieces) == tokenizer.decode(ids)
    assert all("\ufffd" not in piece for piece in pieces)


def test_a_truncated_character_ends_as_a_replacement_character_like_decode() -> None:
    tokenizer = gpt2_tokenizer()
    ids = tokenizer.encode("🙂")
    assert len(ids) > 1
    assert "".join(stream_text(tokenizer, iter(ids[:-1]))) == tokenizer.decode(ids[:-1])


def test_the_empty_prompt_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        greedy(make_model(), [], 3)


def test_char_tokens_stream_as_their_characters() -> None:
    tokenizer = CharTokenizer("\n abé")
    ids = tokenizer.encode("ab é\nba")
    assert list(stream_text(tokenizer, iter(ids))) == list("ab é\nba")



def plain_softmax_draw(logits: torch.Tensor, temperature: float, top_k, top_p, generator: torch.Generator) -> int:
    """The sampler as it was before it was made safe for extreme temperatures: the reference for ordinary ones."""
    scaled = logits.float() / temperature
    candidate_logits, candidate_ids = torch.topk(scaled, top_k) if top_k is not None else (scaled, None)
    choice = int(torch.multinomial(torch.softmax(top_p_mask(candidate_logits, top_p), dim=-1), 1, generator=generator))
    return choice if candidate_ids is None else int(candidate_ids[choice])


@pytest.mark.parametrize("temperature", [0.3, 0.8, 1.0, 1.7])
@pytest.mark.parametrize(("top_k", "top_p"), [(None, None), (10, None), (None, 0.9), (10, 0.9)])
def test_ordinary_temperatures_draw_exactly_as_the_plain_softmax(temperature: float, top_k, top_p) -> None:
    logits = torch.randn(40, generator=torch.Generator().manual_seed(1)) * 3
    ours, reference = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    draws = [sample_next_token(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=ours)
             for _ in range(200)]
    assert draws == [plain_softmax_draw(logits, temperature, top_k, top_p, reference) for _ in range(200)]


@pytest.mark.parametrize("temperature", [1e-6, 1e-40, 1e-300, 5e-324])
@pytest.mark.parametrize("offset", [0.0, -500.0, 500.0])
def test_a_tiny_temperature_draws_like_greedy(temperature: float, offset: float) -> None:
    logits = torch.randn(40, generator=torch.Generator().manual_seed(3)) + offset
    generator = torch.Generator().manual_seed(0)
    for top_k, top_p in [(None, None), (5, None), (None, 0.5)]:
        draws = {sample_next_token(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
                 for _ in range(50)}
        assert draws == {int(logits.argmax())}


@pytest.mark.parametrize("temperature", [1e30, 1e300, math.inf])
def test_a_huge_temperature_draws_uniformly_among_the_top_k(temperature: float) -> None:
    logits = torch.arange(40, dtype=torch.float32) * 10  # the top 5 are ids 35..39
    generator = torch.Generator().manual_seed(0)
    draws = [sample_next_token(logits, temperature=temperature, top_k=5, top_p=None, generator=generator)
             for _ in range(2000)]
    counts = [draws.count(token) for token in range(35, 40)]
    assert sum(counts) == 2000 and min(counts) > 300


@pytest.mark.parametrize("bad", [float("nan"), math.inf])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_nan_or_infinite_scores_are_a_user_error_not_a_draw(bad: float, temperature: float) -> None:
    logits = torch.zeros(40)
    logits[7] = bad
    with pytest.raises(UserError, match="NaN or infinite"):
        sample_next_token(logits, temperature=temperature, top_k=None, top_p=None)
    with pytest.raises(UserError, match="NaN or infinite"):
        sample_next_token(torch.full((40,), NEG_INF), temperature=temperature, top_k=None, top_p=None)


def model_preferring_padding_ids(tokenizer_size: int) -> GPT:
    """A 64-id model whose ids from `tokenizer_size` up (a padded vocabulary) score far above the rest."""
    model = make_model(vocab_size=64)
    original = model.next_token_logits

    def next_token_logits(ids: torch.Tensor, cache) -> torch.Tensor:
        logits = original(ids, cache)
        logits[..., tokenizer_size:] += 100.0
        return logits

    model.next_token_logits = next_token_logits  # type: ignore[method-assign]
    return model


@pytest.mark.parametrize("temperature", [0.0, 1.0, 5.0])
def test_ids_past_the_tokenizers_vocabulary_are_never_drawn(temperature: float) -> None:
    model = model_preferring_padding_ids(tokenizer_size=40)
    tokens = list(stream_tokens(model, [1, 2], max_new_tokens=30, temperature=temperature, top_k=None,
                                vocab_size=40, generator=torch.Generator().manual_seed(0)))
    assert len(tokens) == 30 and max(tokens) < 40


def test_stream_tokens_requires_the_tokenizers_vocabulary_size() -> None:
    with pytest.raises(TypeError, match="vocab_size"):
        stream_tokens(make_model(), [1], max_new_tokens=1, temperature=0.0)  # type: ignore[call-arg]


def test_the_thread_probe_leaves_the_sampling_rng_and_the_output_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe really runs here (`tests/hardware/probes/test_threads.py` tests its choice on a fake clock)."""
    monkeypatch.delenv("HELLOGPT_MEASURE", raising=False)
    model = make_model(block_size=32, vocab_size=20)
    available = torch.get_num_threads()
    before = torch.get_rng_state()
    greedy = list(stream_tokens(model, [1, 2, 3], max_new_tokens=12, temperature=0.0, vocab_size=20))
    try:
        generate.choose_decode_threads(model)
        assert torch.equal(torch.get_rng_state(), before)
        assert list(stream_tokens(model, [1, 2, 3], max_new_tokens=12, temperature=0.0, vocab_size=20)) == greedy
    finally:
        torch.set_num_threads(available)
