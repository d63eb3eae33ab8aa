"""The optimizer of a run: AdamW (weight decay on matrices only, as GPT-2 and nanoGPT), or Muon for the matrices
inside the transformer blocks with AdamW for the rest; an untied token embedding at a rate of its own; and the
per-step learning rate of each of its groups."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn as nn

from hellogpt.config.schema import OptimConfig
from hellogpt.errors import UserError
from hellogpt.train.muon import MuonWithAdamW
from hellogpt.train.schedule import learning_rate_at

# The private foreach kernels MuonWithAdamW steps with; torch has had them since before our floor.
_MUON_TORCH_OPS = ("_foreach_lerp_", "_foreach_lerp", "_foreach_add_", "_foreach_div")
MUON_MIN_TORCH = "2.6"
# The param group of an untied token embedding: AdamW at a rate of its own (optim.embedding_learning_rate).
EMBEDDING_ROLE = "embedding"


def build_optimizer(
    model: nn.Module, optim: OptimConfig, device: torch.device, *, tunes_adapters: bool = False
) -> torch.optim.AdamW:
    """The run's optimizer over `model`'s trainable weights; fused AdamW on CUDA and CPU.

    With optim.name=muon, Muon takes the 2-D weights inside the blocks (any model whose blocks sit in an
    nn.ModuleList, whatever they are named). LoRA adapters (`tunes_adapters`) always get AdamW: each is one factor of
    a low-rank update, and orthogonalising the factors apart does not orthogonalise their product. An untied token
    embedding (qwen3's) is an AdamW group of its own, at optim.embedding_learning_rate when that is set."""
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    hidden = hidden_matrix_ids(model) if optim.name == "muon" and not tunes_adapters else set()
    muon = [parameter for parameter in parameters if id(parameter) in hidden]
    rest = [parameter for parameter in parameters if id(parameter) not in hidden]
    matrices = [parameter for parameter in rest if parameter.dim() >= 2]
    embedding = None if tunes_adapters else untied_input_embedding(model)
    groups = [
        {"params": [matrix for matrix in matrices if matrix is not embedding], "weight_decay": optim.weight_decay},
        {"params": [parameter for parameter in rest if parameter.dim() < 2], "weight_decay": 0.0},
    ]
    # Where it sat in the matrices' group before it had a group of its own: older checkpoints resume (see
    # `saved_state_in_layout`). None when it is not trained here (tied, frozen, or no such model).
    place = next((index for index, matrix in enumerate(matrices) if matrix is embedding), None)
    if place is not None:
        groups.append({
            "params": [embedding], "role": EMBEDDING_ROLE, "split_from": [0, place],
            "lr": embedding_learning_rate(optim), "weight_decay": embedding_weight_decay(optim),
        })
    extra = {"fused": True} if _fused_adamw_available(device) else {}
    betas = (optim.beta1, optim.beta2)
    if not muon:
        return torch.optim.AdamW(groups, lr=optim.learning_rate, betas=betas, **extra)
    _require_muon_support()
    return MuonWithAdamW(
        groups,
        muon,
        learning_rate=optim.learning_rate,
        muon_learning_rate=optim.muon_learning_rate,
        muon_momentum=optim.muon_momentum,
        betas=betas,
        **extra,
    )


def set_learning_rates(optimizer: torch.optim.Optimizer, step: int, optim: OptimConfig) -> None:
    """Each group's rate for the optimizer step with 0-based index `step`: the schedule (warmup, decay) applied to
    the group's own peak rate. Muon's momentum is set here too, so a resumed run follows the config, not the file."""
    adamw_rate = learning_rate_at(step, optim)
    for group in optimizer.param_groups:
        if group.get("kind") == "muon":
            group["lr"] = adamw_rate * (optim.muon_learning_rate / optim.learning_rate)
            group["momentum"] = optim.muon_momentum
        elif group.get("role") == EMBEDDING_ROLE:
            group["lr"] = adamw_rate * (embedding_learning_rate(optim) / optim.learning_rate)
            group["weight_decay"] = embedding_weight_decay(optim)
        else:
            group["lr"] = adamw_rate


def embedding_learning_rate(optim: OptimConfig) -> float:
    """The untied embedding's peak rate. nanochat gives it ~50x the head's: each row gets a gradient only from the
    positions holding its token, and at the head's rate the rows of a short run barely leave their random start."""
    return optim.embedding_learning_rate if optim.embedding_learning_rate is not None else optim.learning_rate


def embedding_weight_decay(optim: OptimConfig) -> float:
    """No decay at a rate of its own (at 0.2, 0.1 of decay would shrink every row by 2% a step, used or not); unset, the
    embedding decays as the other matrices, as it did before it had a group of its own."""
    return 0.0 if optim.embedding_learning_rate is not None else optim.weight_decay


def untied_input_embedding(model: nn.Module) -> Optional[nn.Parameter]:
    """The token embedding's weight when it is not also the LM head (qwen3's); None for GPT-2's tied one."""
    if not hasattr(model, "input_embeddings"):
        return None
    weight = model.input_embeddings().weight
    head = getattr(getattr(model, "lm_head", None), "weight", None)
    return None if head is weight or not isinstance(weight, nn.Parameter) else weight


def saved_state_in_layout(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> dict[str, Any]:
    """`saved` with the untied embedding moved into a group of its own where `optimizer` has one and the state,
    written before that group existed, does not: its moments move with it, so such a checkpoint resumes."""
    saved_groups = saved.get("param_groups")
    current = optimizer.param_groups
    position = next((index for index, group in enumerate(current) if group.get("role") == EMBEDDING_ROLE), None)
    if not isinstance(saved_groups, list) or position is None or len(saved_groups) != len(current) - 1:
        return saved
    if any(isinstance(group, dict) and group.get("role") == EMBEDDING_ROLE for group in saved_groups):
        return saved
    source, place = current[position]["split_from"]
    ids = list(saved_groups[source].get("params", []))
    if place >= len(ids):
        return saved
    moved = ids.pop(place)
    groups = [dict(group) for group in saved_groups]
    groups[source]["params"] = ids
    settings = {key: value for key, value in current[position].items() if key != "params"}
    groups.insert(position, {**settings, "params": [moved]})
    return {**saved, "param_groups": groups}


def optimizer_name_of_state(state: dict[str, Any]) -> str:
    """Which optim.name wrote an optimizer state dict: muon when a group is Muon's (states from before Muon have no
    `kind` and are AdamW's)."""
    groups = state.get("param_groups") or []
    return "muon" if any(isinstance(group, dict) and group.get("kind") == "muon" for group in groups) else "adamw"


def require_same_optimizer(optimizer: torch.optim.Optimizer, saved: Optional[dict[str, Any]], path: Path) -> None:
    """A run resumes with the optimizer that wrote its state: the other one's state does not fit it."""
    wanted = optimizer_name_of_state(optimizer.state_dict())
    found = optimizer_name_of_state(saved or {})
    if wanted != found:
        raise UserError(
            f"{path} was trained with optim.name={found} and this run asks for {wanted}: resume with "
            f"--set optim.name={found}, or start anew from its weights with `hellogpt tune --from {path}`"
        )


def hidden_matrix_ids(model: nn.Module) -> set[int]:
    """The 2-D weights inside the repeated blocks: the parameters under any nn.ModuleList."""
    block_lists = [module for module in model.modules() if isinstance(module, nn.ModuleList)]
    return {
        id(parameter)
        for block_list in block_lists
        for parameter in block_list.parameters()
        if parameter.dim() == 2 and parameter.requires_grad
    }


def _fused_adamw_available(device: torch.device) -> bool:
    # The fused kernel does the whole update in one launch per step on CUDA; on CPU (torch >= 2.4) it is
    # about 6x faster than the per-tensor loop (benchmarks/train.py), with the same updates to 1e-7.
    cpu_fused = device.type == "cpu" and tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (2, 4)
    return (device.type == "cuda" or cpu_fused) and "fused" in inspect.signature(torch.optim.AdamW).parameters


def _require_muon_support() -> None:
    missing = [name for name in _MUON_TORCH_OPS if not hasattr(torch, name)]
    if missing:
        raise UserError(
            f"optim.name=muon needs torch >= {MUON_MIN_TORCH} (this is torch {torch.__version__}, which lacks "
            f"torch.{missing[0]}): upgrade torch, or set optim.name=adamw"
        )
