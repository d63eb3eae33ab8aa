"""LoRA adapters on a tiny GPT: a fresh adapter changes nothing, only adapters train, merging is exact."""

from __future__ import annotations

import pytest
import torch

from hellogpt.model.gpt import GPT, GPTConfig
from hellogpt.model.lora import (
    LoraLinear,
    LoraSpec,
    WeightsDigest,
    adapter_state_dict,
    add_adapters,
    hold_frozen_weights_in,
    load_adapter_state_dict,
    merge_adapters,
)

CONFIG = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=50, dropout=0.0, bias=True, arch="gpt2")
SPEC = LoraSpec(rank=4, alpha=8.0, dropout=0.0, targets=("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"))


def tiny_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(CONFIG)


def ids(seed: int = 1) -> torch.Tensor:
    return torch.randint(0, CONFIG.vocab_size, (2, CONFIG.block_size), generator=torch.Generator().manual_seed(seed))


def train_steps(model: GPT, steps: int = 5) -> None:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = ids(2)
    for _ in range(steps):
        _, loss = model(batch[:, :-1], batch[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_fresh_adapters_leave_the_logits_unchanged() -> None:
    base, adapted = tiny_model(), tiny_model()
    add_adapters(adapted, SPEC)
    torch.testing.assert_close(adapted(ids())[0], base(ids())[0], atol=0, rtol=0)


def test_adapters_wrap_every_target_of_every_block_and_keep_the_weight_names() -> None:
    model = tiny_model()
    wrapped = add_adapters(model, SPEC)
    assert len(wrapped) == CONFIG.n_layer * len(SPEC.targets)
    assert all(isinstance(model.get_submodule(name), LoraLinear) for name in wrapped)
    assert "transformer.h.0.attn.c_attn.weight" in model.state_dict()
    assert set(adapter_state_dict(model)) == {f"{name}.lora_{part}" for name in wrapped for part in "AB"}


def test_only_adapter_parameters_change_when_training() -> None:
    model = tiny_model()
    add_adapters(model, SPEC)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    train_steps(model)
    after = model.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == set(adapter_state_dict(model))
    assert all(p.grad is None for name, p in model.named_parameters() if "lora_" not in name)


def test_merged_logits_equal_the_base_plus_adapters() -> None:
    model = tiny_model()
    add_adapters(model, SPEC)
    train_steps(model)
    model.eval()
    with torch.no_grad():
        adapted = model(ids())[0]
        merged = merge_adapters(model)
        assert not any(isinstance(module, LoraLinear) for module in merged.modules())
        torch.testing.assert_close(merged(ids())[0], adapted, atol=1e-5, rtol=0)


def test_saved_adapters_load_into_a_fresh_wrap_of_the_same_base() -> None:
    trained = tiny_model()
    add_adapters(trained, SPEC)
    train_steps(trained)
    fresh = tiny_model()
    add_adapters(fresh, SPEC)
    load_adapter_state_dict(fresh, adapter_state_dict(trained))
    trained.eval(), fresh.eval()
    torch.testing.assert_close(fresh(ids())[0], trained(ids())[0], atol=0, rtol=0)


def test_adapters_of_another_rank_do_not_load() -> None:
    model = tiny_model()
    add_adapters(model, SPEC)
    other = tiny_model()
    add_adapters(other, LoraSpec(rank=2, alpha=4.0, dropout=0.0, targets=SPEC.targets))
    with pytest.raises(ValueError, match="of another shape"):
        load_adapter_state_dict(model, adapter_state_dict(other))


def test_a_target_that_names_no_linear_layer_is_refused() -> None:
    with pytest.raises(ValueError, match="LoRA target 'attn.q_proj' names no linear layer"):
        add_adapters(tiny_model(), LoraSpec(rank=4, alpha=8.0, dropout=0.0, targets=("attn.q_proj",)))


def test_frozen_block_matrices_are_held_in_half_precision_the_rest_in_fp32() -> None:
    model = tiny_model()
    add_adapters(model, SPEC)
    hold_frozen_weights_in(model, torch.bfloat16)
    dtypes = {name: parameter.dtype for name, parameter in model.named_parameters()}
    assert dtypes["transformer.h.0.mlp.c_fc.weight"] == torch.bfloat16
    assert dtypes["transformer.h.0.mlp.c_fc.lora_A"] == torch.float32
    assert dtypes["transformer.h.0.ln_1.weight"] == dtypes["transformer.wte.weight"] == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, loss = model(ids()[:, :-1], ids()[:, 1:])
    loss.backward()
    assert model.transformer.h[0].mlp.c_fc.lora_A.grad is not None


def test_the_weights_digest_ignores_order_and_sees_any_change() -> None:
    state = tiny_model().state_dict()
    forward = WeightsDigest().update_all(state.items()).hexdigest()
    backward = WeightsDigest().update_all(reversed(list(state.items()))).hexdigest()
    assert forward == backward
    state["transformer.h.1.mlp.c_proj.bias"] = state["transformer.h.1.mlp.c_proj.bias"] + 1e-6
    assert WeightsDigest().update_all(state.items()).hexdigest() != forward


def test_activation_checkpointing_gives_identical_losses_and_gradients() -> None:
    config = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=50, dropout=0.1, bias=True, arch="gpt2")
    results = []
    for recompute in (False, True):
        torch.manual_seed(0)
        model = GPT(config)
        model.activation_checkpointing = recompute
        torch.manual_seed(7)  # dropout draws
        _, loss = model(ids()[:, :-1], ids()[:, 1:])
        loss.backward()
        results.append((loss.item(), model.transformer.h[0].attn.c_attn.weight.grad.clone()))
    assert results[0][0] == results[1][0]
    torch.testing.assert_close(results[0][1], results[1][1], atol=0, rtol=0)
