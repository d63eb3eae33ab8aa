"""The qwen3 architecture: transformers' Qwen3ForCausalLM numbers, the speedrun init, and everything that runs a model
(KV cache, batched decoding, int8, LoRA, activation checkpointing, FLOPs) on it as on GPT-2."""

from __future__ import annotations

import math

import pytest
import torch

from hellogpt.config.schema import LORA_TARGETS
from hellogpt.decode.cache import BatchedKVCache, prefill_slot
from hellogpt.decode.step import DecodingModel, decode_step
from hellogpt.model.architectures import build_model
from hellogpt.model.base import GPTConfig
from hellogpt.model.lora import LoraSpec, add_adapters, merge_adapters
from hellogpt.model.quantize import int8_engine, quantize_int8
from hellogpt.model.qwen3 import Qwen3, intermediate_size

TINY = GPTConfig(n_layer=2, n_head=4, n_embd=32, block_size=64, vocab_size=97, dropout=0.0, bias=False, arch="qwen3")


def trained_looking(config: GPTConfig = TINY, seed: int = 0) -> Qwen3:
    """A Qwen3 whose zero-initialised projections are random too, so that every part shows in the logits."""
    torch.manual_seed(seed)
    model = build_model(config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() == 2:
                parameter.normal_(0.0, 0.3)
            else:
                parameter.uniform_(0.5, 1.5)  # the norms' gains
    assert isinstance(model, Qwen3)
    return model.eval()


def ids(length: int, batch: int = 1, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, TINY.vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_logits_are_those_of_transformers_qwen3() -> None:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from hellogpt.model.qwen3 import RMS_NORM_EPS, ROPE_THETA

    model = trained_looking()
    reference = Qwen3ForCausalLM(Qwen3Config(
        vocab_size=TINY.vocab_size, hidden_size=TINY.n_embd, intermediate_size=intermediate_size(TINY),
        num_hidden_layers=TINY.n_layer, num_attention_heads=TINY.n_head, num_key_value_heads=TINY.n_head,
        head_dim=TINY.head_dim, max_position_embeddings=TINY.block_size, rms_norm_eps=RMS_NORM_EPS,
        rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA}, tie_word_embeddings=False,
    )).eval()
    reference.load_state_dict(model.state_dict(), strict=True)
    tokens = ids(40, batch=2)
    with torch.no_grad():
        torch.testing.assert_close(model(tokens)[0], reference(tokens).logits, atol=1e-5, rtol=0)


def test_init_zeroes_the_output_projections_and_starts_at_log_vocab() -> None:
    torch.manual_seed(0)
    model = build_model(TINY)
    for block in model.blocks:
        assert not block.self_attn.o_proj.weight.any() and not block.mlp.down_proj.weight.any()
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    with torch.no_grad():
        _, loss = model(ids(32, batch=4), ids(32, batch=4, seed=2))
    assert abs(loss.item() - math.log(TINY.vocab_size)) < 0.01


def test_the_rotary_tables_are_buffers_outside_the_state_dict() -> None:
    model = build_model(TINY)
    assert model.rotary_cos.shape == (TINY.block_size, TINY.head_dim)
    assert not any("rotary" in name for name in model.state_dict())


def test_cached_decoding_gives_the_full_sequence_logits() -> None:
    model = trained_looking()
    tokens = ids(20, batch=2)
    with torch.no_grad():
        full, _ = model(tokens)
        cache = BatchedKVCache(model, slots=2).sequences(0, 2)
        pieces = [model(tokens[:, :5], cache=cache)[0]]
        pieces += [model(tokens[:, position : position + 1], cache=cache)[0] for position in range(5, 20)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=0)


def test_the_decoding_step_of_several_rows_equals_each_row_alone_and_the_full_pass() -> None:
    model = trained_looking()
    decoding = DecodingModel(model)
    contexts = [ids(length, seed=length)[0].tolist() for length in (3, 9, 5)]
    batched = BatchedKVCache(model, slots=3)
    for slot, context in enumerate(contexts):
        prefill_slot(model, batched, slot, context[:-1])
    together = decode_step(decoding, batched, {slot: context[-1] for slot, context in enumerate(contexts)})
    for slot, context in enumerate(contexts):
        alone = BatchedKVCache(model, slots=1)
        prefill_slot(model, alone, 0, context[:-1])
        torch.testing.assert_close(together[slot], decode_step(decoding, alone, {0: context[-1]})[0], atol=1e-5, rtol=0)
        with torch.no_grad():
            torch.testing.assert_close(together[slot], model(torch.tensor([context]))[0][0, -1], atol=1e-5, rtol=0)


@pytest.mark.skipif(int8_engine() is None, reason="no quantized engine in this torch build")
def test_int8_weights_decode_close_to_fp32() -> None:
    tokens = ids(12)[0].tolist()
    with torch.no_grad():
        full = trained_looking()(torch.tensor([tokens]))[0][0, -1]
        quantized = quantize_int8(trained_looking())
        cache = BatchedKVCache(quantized, slots=1)
        prefill_slot(quantized, cache, 0, tokens[:-1])
        stepped = decode_step(DecodingModel(quantized), cache, {0: tokens[-1]})[0]
        # int8 activations take one scale per call: the model's own cached forward of the same single row.
        again = BatchedKVCache(quantized, slots=1)
        prefill_slot(quantized, again, 0, tokens[:-1])
        forward = quantized.next_token_logits(torch.tensor([tokens[-1:]]), again.sequences(0))[0]
    torch.testing.assert_close(stepped, forward, atol=1e-5, rtol=0)
    assert (stepped - full).abs().max() < 0.1 * full.abs().max()


def test_lora_adapts_qwen3s_projections_and_merges_to_the_same_logits() -> None:
    model = trained_looking()
    spec = LoraSpec(rank=2, alpha=4.0, dropout=0.0, targets=LORA_TARGETS["qwen3"])
    wrapped = add_adapters(model, spec)
    assert len(wrapped) == TINY.n_layer * len(LORA_TARGETS["qwen3"])
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("lora_B"):
                parameter.normal_(0.0, 0.1)
        adapted = model(ids(10))[0]
        merged = merge_adapters(model)(ids(10))[0]
    torch.testing.assert_close(merged, adapted, atol=1e-5, rtol=0)


def test_gpt2_lora_targets_name_no_layer_of_qwen3() -> None:
    with pytest.raises(ValueError, match="names no linear layer"):
        add_adapters(trained_looking(), LoraSpec(rank=2, alpha=4.0, dropout=0.0, targets=LORA_TARGETS["gpt2"][:1]))


def test_activation_checkpointing_gives_the_same_loss_and_gradients() -> None:
    losses, gradients = [], []
    for recompute in (False, True):
        model = trained_looking().train()
        model.activation_checkpointing = recompute
        _, loss = model(ids(16, batch=2), ids(16, batch=2, seed=3))
        loss.backward()
        losses.append(loss.detach())
        gradients.append(model.model.layers[0].self_attn.q_proj.weight.grad.clone())
    torch.testing.assert_close(losses[1], losses[0], atol=0, rtol=0)
    torch.testing.assert_close(gradients[1], gradients[0], atol=1e-6, rtol=0)


def test_flops_per_token_counts_the_matrices_a_token_multiplies_by() -> None:
    model = build_model(TINY)
    width, hidden = TINY.n_embd, intermediate_size(TINY)
    per_block = 4 * width * width + 3 * width * hidden + 2 * width + 2 * TINY.head_dim  # projections, norms, QK-norms
    matrices = TINY.n_layer * per_block + width + TINY.vocab_size * width  # blocks, final norm, LM head
    assert model.num_parameters() == matrices + TINY.vocab_size * width  # and the (untied) token embedding
    attention = 12 * TINY.n_layer * TINY.n_head * TINY.head_dim * 16
    assert model.flops_per_token(16) == 6 * matrices + attention


def test_the_swiglu_width_is_eight_thirds_rounded_up_to_64() -> None:
    widths = {n_embd: intermediate_size(GPTConfig(**{**TINY.to_dict(), "n_embd": n_embd})) for n_embd in (32, 128, 192, 768)}
    assert widths == {32: 128, 128: 384, 192: 512, 768: 2048}
