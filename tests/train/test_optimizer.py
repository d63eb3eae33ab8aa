"""The optimizers: which weights Muon takes, its orthogonalisation, each group's scheduled rate, the torch check."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from hellogpt.config.schema import OptimConfig
from hellogpt.errors import UserError
from hellogpt.model.architectures import build_model
from hellogpt.model.gpt import GPT, GPTConfig
from hellogpt.train.muon import MuonWithAdamW, newton_schulz, newton_schulz_spectral, orthogonalize
from hellogpt.train.optimizer import (
    EMBEDDING_ROLE,
    build_optimizer,
    optimizer_name_of_state,
    saved_state_in_layout,
    set_learning_rates,
)
from hellogpt.train.schedule import learning_rate_at

CPU = torch.device("cpu")
MUON = OptimConfig(name="muon", learning_rate=1e-3, muon_learning_rate=0.02, warmup_iters=4, lr_decay_iters=20, min_lr=1e-4)


def tiny_gpt() -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=40, dropout=0.0, bias=True, arch="gpt2")
    return GPT(config)


def tiny_qwen3() -> nn.Module:
    config = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=40, dropout=0.0, bias=False, arch="qwen3")
    return build_model(config)


class Stack(nn.Module):
    """Not a GPT-2: other names, no tied head; its blocks sit in an nn.ModuleList called `layers`."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(8, 24), nn.LayerNorm(24), nn.Linear(24, 8)) for _ in range(2))
        self.out = nn.Linear(8, 10, bias=False)


def groups_by_kind(optimizer: torch.optim.Optimizer) -> dict[str, set[int]]:
    kinds: dict[str, set[int]] = {}
    for group in optimizer.param_groups:
        kinds.setdefault(group["kind"], set()).update(id(parameter) for parameter in group["params"])
    return kinds


@pytest.mark.parametrize("make", [tiny_gpt, tiny_qwen3, Stack], ids=["gpt2", "qwen3", "other-names"])
def test_muon_takes_exactly_the_matrices_inside_the_blocks(make) -> None:
    model = make()
    kinds = groups_by_kind(build_optimizer(model, MUON, CPU))
    blocks = next(module for module in model.modules() if isinstance(module, nn.ModuleList))
    inside = {id(parameter) for parameter in blocks.parameters() if parameter.dim() == 2}
    assert kinds["muon"] == inside and inside
    assert kinds["adamw"] == {id(parameter) for parameter in model.parameters()} - inside


def test_adamw_stays_a_plain_fused_adamw_and_lora_adapters_keep_it_under_muon() -> None:
    for optimizer in (build_optimizer(tiny_gpt(), OptimConfig(), CPU), build_optimizer(tiny_gpt(), MUON, CPU, tunes_adapters=True)):
        assert type(optimizer) is torch.optim.AdamW and optimizer_name_of_state(optimizer.state_dict()) == "adamw"
    assert optimizer_name_of_state(build_optimizer(tiny_gpt(), MUON, CPU).state_dict()) == "muon"


def test_the_spectral_newton_schulz_equals_the_iteration() -> None:
    torch.manual_seed(0)
    wide = torch.randn(3, 16, 48)
    wide = wide / torch.linalg.matrix_norm(wide, keepdim=True)
    assert torch.allclose(newton_schulz_spectral(wide, 5), newton_schulz(wide, 5), atol=1e-5)


def test_orthogonalize_brings_every_singular_value_near_one_for_tall_and_wide_matrices() -> None:
    torch.manual_seed(0)
    for shape in [(2, 24, 8), (2, 8, 24), (2, 12, 12)]:
        values = torch.linalg.svdvals(orthogonalize(torch.randn(shape)))
        assert values.min() > 0.6 and values.max() < 1.25, shape


def test_each_group_follows_the_schedule_relative_to_its_own_peak_rate() -> None:
    optimizer = build_optimizer(tiny_gpt(), MUON, CPU)
    for step in (0, 3, 10, 25):
        set_learning_rates(optimizer, step, MUON)
        rates = {group["kind"]: group["lr"] for group in optimizer.param_groups}
        assert rates["adamw"] == learning_rate_at(step, MUON)
        assert rates["muon"] == pytest.approx(learning_rate_at(step, MUON) * 20)
    assert rates["muon"] == pytest.approx(2e-3)  # min_lr / learning_rate of Muon's peak after the decay


@pytest.mark.parametrize("name", ["adamw", "muon"])
def test_an_untied_embedding_gets_its_own_rate_without_decay_and_a_tied_one_stays_with_the_head(name: str) -> None:
    optim = MUON.model_copy(update={"name": name, "embedding_learning_rate": 0.2})
    model = tiny_qwen3()
    optimizer = build_optimizer(model, optim, CPU)
    (embedding_group,) = [group for group in optimizer.param_groups if group.get("role") == EMBEDDING_ROLE]
    assert embedding_group["params"] == [model.input_embeddings().weight]
    assert all(model.input_embeddings().weight is not parameter
               for group in optimizer.param_groups if group is not embedding_group for parameter in group["params"])
    for step in (0, 3, 25):
        set_learning_rates(optimizer, step, optim)
        assert embedding_group["lr"] == pytest.approx(learning_rate_at(step, optim) * 200)
        assert embedding_group["weight_decay"] == 0.0
    unset = build_optimizer(tiny_qwen3(), MUON, CPU)
    (unset_group,) = [group for group in unset.param_groups if group.get("role") == EMBEDDING_ROLE]
    set_learning_rates(unset, 3, MUON)
    assert unset_group["lr"] == learning_rate_at(3, MUON) and unset_group["weight_decay"] == MUON.weight_decay
    assert not [group for group in build_optimizer(tiny_gpt(), optim, CPU).param_groups if group.get("role")]


def test_a_state_saved_before_the_embedding_had_its_own_group_loads_with_its_moments() -> None:
    model = tiny_qwen3()
    optimizer = build_optimizer(model, MUON, CPU)
    _, loss = model(torch.randint(40, (2, 16)), torch.randint(40, (2, 16)))
    loss.backward()
    optimizer.step()
    state = optimizer.state_dict()
    # The layout of before: the embedding first among the matrices' group, no group of its own.
    position = next(index for index, group in enumerate(state["param_groups"]) if group.get("role") == EMBEDDING_ROLE)
    embedding_group = state["param_groups"][position]
    old = {**state, "param_groups": [dict(group) for index, group in enumerate(state["param_groups"]) if index != position]}
    source, place = embedding_group["split_from"]
    old["param_groups"][source]["params"] = list(old["param_groups"][source]["params"])
    old["param_groups"][source]["params"].insert(place, embedding_group["params"][0])
    fresh = build_optimizer(model, MUON, CPU)
    fresh.load_state_dict(saved_state_in_layout(fresh, old))
    weight = model.input_embeddings().weight
    assert torch.equal(fresh.state[weight]["exp_avg"], optimizer.state[weight]["exp_avg"])
    assert saved_state_in_layout(fresh, state) is state


def test_a_muon_step_moves_the_matrices_and_a_skipped_step_moves_nothing() -> None:
    model = tiny_gpt()
    optimizer = build_optimizer(model, MUON, CPU)
    assert isinstance(optimizer, MuonWithAdamW)
    _, loss = model(torch.randint(40, (2, 16)), torch.randint(40, (2, 16)))
    loss.backward()
    before = [parameter.detach().clone() for parameter in model.parameters()]
    optimizer.found_inf = torch.ones(())  # type: ignore[attr-defined]
    optimizer.step()
    assert all(torch.equal(old, new) for old, new in zip(before, model.parameters()))
    del optimizer.found_inf  # type: ignore[attr-defined]
    optimizer.step()
    assert all(not torch.equal(old, new) for old, new in zip(before, model.parameters()))


def test_muon_on_a_torch_without_its_kernels_says_which_torch_it_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(torch, "_foreach_lerp_")
    with pytest.raises(UserError, match=r"optim.name=muon needs torch >= 2\.6"):
        build_optimizer(tiny_gpt(), MUON, CPU)
