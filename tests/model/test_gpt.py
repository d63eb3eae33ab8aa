"""The GPT module: KV-cache decoding equals the full pass, init loss, parameter and FLOP counts, tying."""

from __future__ import annotations

import math

import pytest
import torch

from hellogpt.decode.cache import BatchedKVCache
from hellogpt.model.gpt import GPT, GPTConfig

TINY = GPTConfig(n_layer=2, n_head=4, n_embd=32, block_size=64, vocab_size=97, dropout=0.0, bias=True, arch="gpt2")


def _model(config: GPTConfig = TINY, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(config).eval()


@pytest.mark.parametrize("bias", [True, False])
def test_cached_decoding_gives_the_full_sequence_logits(bias: bool) -> None:
    config = GPTConfig(**{**TINY.to_dict(), "bias": bias})
    model = _model(config)
    ids = torch.randint(0, config.vocab_size, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full_logits, _ = model(ids)
        cache = BatchedKVCache(model, slots=2).sequences(0, 2)
        pieces = [model(ids[:, :5], cache=cache)[0]]  # prefill several tokens at once
        pieces += [model(ids[:, position : position + 1], cache=cache)[0] for position in range(5, 20)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full_logits, atol=1e-5, rtol=0)
    assert cache.length == 20


def test_cached_decoding_accepts_several_tokens_after_the_prefill() -> None:
    model = _model()
    ids = torch.randint(0, TINY.vocab_size, (1, 24), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full_logits, _ = model(ids)
        cache = BatchedKVCache(model, slots=1).sequences()
        pieces = [model(ids[:, start : start + 6], cache=cache)[0] for start in range(0, 24, 6)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full_logits, atol=1e-5, rtol=0)


def test_next_token_logits_with_cache_equal_the_last_position_of_the_full_pass() -> None:
    model = _model()
    ids = torch.randint(0, TINY.vocab_size, (1, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full_logits, _ = model(ids)
        cache = BatchedKVCache(model, slots=1, max_length=12).sequences()
        model.next_token_logits(ids[:, :11], cache=cache)
        last = model.next_token_logits(ids[:, 11:], cache=cache)
    torch.testing.assert_close(last, full_logits[:, -1, :], atol=1e-5, rtol=0)


def test_cache_reset_starts_a_new_sequence() -> None:
    model = _model()
    ids = torch.randint(0, TINY.vocab_size, (1, 8), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        cache = BatchedKVCache(model, slots=1).sequences()
        first = model(ids, cache=cache)[0]
        cache.reset()
        again = model(ids, cache=cache)[0]
    assert cache.length == 8
    torch.testing.assert_close(again, first, atol=0, rtol=0)


def test_sequences_longer_than_the_block_are_refused() -> None:
    model = _model()
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, TINY.block_size + 1, dtype=torch.long))


def test_loss_at_init_is_close_to_log_vocab() -> None:
    config = GPTConfig(n_layer=2, n_head=4, n_embd=64, block_size=32, vocab_size=1000, dropout=0.0, bias=True, arch="gpt2")
    model = _model(config)
    generator = torch.Generator().manual_seed(5)
    inputs = torch.randint(0, config.vocab_size, (8, 32), generator=generator)
    targets = torch.randint(0, config.vocab_size, (8, 32), generator=generator)
    with torch.no_grad():
        _, loss = model(inputs, targets)
    assert loss is not None
    assert abs(loss.item() - math.log(config.vocab_size)) < 0.05


def test_targets_of_minus_one_are_ignored_by_the_loss() -> None:
    model = _model()
    inputs = torch.randint(0, TINY.vocab_size, (1, 10), generator=torch.Generator().manual_seed(6))
    targets = torch.randint(0, TINY.vocab_size, (1, 10), generator=torch.Generator().manual_seed(7))
    masked = targets.clone()
    masked[:, 5:] = -1
    with torch.no_grad():
        _, masked_loss = model(inputs, masked)
        logits, _ = model(inputs)
    expected = torch.nn.functional.cross_entropy(logits[0, :5], targets[0, :5])
    torch.testing.assert_close(masked_loss, expected)


def test_loss_accepts_targets_sliced_from_the_inputs() -> None:
    model = _model()
    batch = torch.randint(0, TINY.vocab_size, (2, 11), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        _, sliced_loss = model(batch[:, :-1], batch[:, 1:])  # a non-contiguous view
        _, copied_loss = model(batch[:, :-1], batch[:, 1:].contiguous())
    torch.testing.assert_close(sliced_loss, copied_loss, atol=0, rtol=0)


def test_num_parameters_counts_the_tied_head_once_and_excludes_position_embeddings() -> None:
    config = TINY
    model = _model(config)
    width, layers = config.n_embd, config.n_layer
    per_block = (
        2 * 2 * width  # ln_1, ln_2 weight and bias
        + width * 3 * width + 3 * width  # c_attn
        + width * width + width  # attn.c_proj
        + width * 4 * width + 4 * width  # c_fc
        + 4 * width * width + width  # mlp.c_proj
    )
    expected = config.vocab_size * width + layers * per_block + 2 * width  # wte (= lm_head), blocks, ln_f
    assert model.num_parameters() == expected
    assert model.num_parameters(exclude_position_embeddings=False) == expected + config.block_size * width


def test_flops_per_token_is_six_n_plus_attention_term() -> None:
    model = _model()
    config = TINY
    attention = 12 * config.n_layer * config.n_head * config.head_dim
    assert model.flops_per_token(16) == 6 * model.num_parameters() + attention * 16
    assert model.flops_per_token() == 6 * model.num_parameters() + attention * config.block_size


def test_lm_head_is_tied_to_the_token_embedding() -> None:
    model = _model()
    assert model.lm_head.weight is model.transformer.wte.weight
    model.train()
    _, loss = model(torch.tensor([[1, 2, 3]]), torch.tensor([[2, 3, 4]]))
    assert loss is not None
    loss.backward()
    assert model.transformer.wte.weight.grad is not None
    assert model.transformer.wte.weight.grad[4].abs().sum() > 0  # reached only through the LM head


def test_residual_projections_get_the_scaled_init() -> None:
    config = GPTConfig(n_layer=8, n_head=4, n_embd=128, block_size=16, vocab_size=64, dropout=0.0, bias=True, arch="gpt2")
    model = _model(config)
    scaled_std = model.transformer.h[0].mlp.c_proj.weight.std().item()
    plain_std = model.transformer.h[0].mlp.c_fc.weight.std().item()
    assert scaled_std == pytest.approx(0.02 / math.sqrt(2 * config.n_layer), rel=0.1)
    assert plain_std == pytest.approx(0.02, rel=0.1)
