"""Token rows added to a model (the chat markers), trainable on their own under LoRA. Pure torch.

A model without rows for new special tokens (Hugging Face GPT-2's 50257) grows its embedding and head, each new row
the mean of the existing ones, as transformers' `resize_token_embeddings` does. A full tune then trains them with
everything else; a LoRA tune keeps the base rows frozen and trains only the new ones: the embedding (and an untied
head) is parametrised as `cat(frozen base rows, added_rows)`, and `added_rows` is saved with the adapters (its name
ends in `.added_rows`). Merging writes them into the weight, so the merged model is exactly the trained one.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

ADDED_ROWS_SUFFIX = ".added_rows"
# The token embedding of each architecture (gpt2, qwen3) and the head; a tied head is the embedding itself.
EMBEDDINGS = ("transformer.wte.weight", "model.embed_tokens.weight")
HEAD = "lm_head.weight"


def grown_rows(matrix: torch.Tensor, rows: int) -> torch.Tensor:
    """`matrix` with rows appended up to `rows`, each the mean of the existing rows."""
    mean = matrix.float().mean(dim=0, keepdim=True).to(matrix.dtype)
    return torch.cat([matrix, mean.expand(rows - matrix.shape[0], -1)], dim=0).contiguous()


def embedding_name(state: dict[str, Any]) -> str:
    [name] = [name for name in EMBEDDINGS if name in state]
    return name


def state_with_rows(state: dict[str, Any], vocab_size: int) -> tuple[dict[str, Any], Optional[int]]:
    """`state` with at least `vocab_size` embedding (and head) rows, and the first added row (None: none added).

    A tied head (GPT-2's, the same tensor as the embedding) stays tied: it is the embedding, grown once."""
    name = embedding_name(state)
    embedding = state[name]
    have = int(embedding.shape[0])
    if have >= vocab_size:
        return state, None
    grown = dict(state)
    grown[name] = grown_rows(embedding, vocab_size)
    head = state.get(HEAD)
    if head is not None:
        tied = head is embedding or head.data_ptr() == embedding.data_ptr()
        grown[HEAD] = grown[name] if tied else grown_rows(head, vocab_size)
    return grown, have


class AddedRows(nn.Module):
    """The parametrisation `weight -> cat(weight[:first], added_rows)`: base rows frozen, new rows trained."""

    def __init__(self, weight: torch.Tensor, first: int) -> None:
        super().__init__()
        self.first = first
        self.added_rows = nn.Parameter(weight.detach()[first:].float().clone())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return torch.cat([weight[: self.first], self.added_rows.to(weight.dtype)], dim=0)


def add_row_adapters(model: nn.Module, first: int) -> None:
    """Make the rows from `first` on of the embedding (and the head) trainable on their own, the rest frozen.

    Call after the model is frozen (`add_adapters`). A tied head shares the embedding's `AddedRows`."""
    embedding = model.get_submodule(embedding_name(dict(model.named_parameters(remove_duplicate=False))).rpartition(".")[0])
    head = model.get_submodule(HEAD.rpartition(".")[0])
    tied = head.weight is embedding.weight
    rows = AddedRows(embedding.weight, first)
    parametrize.register_parametrization(embedding, "weight", rows)
    parametrize.register_parametrization(head, "weight", rows if tied else AddedRows(head.weight, first))
    embedding.parametrizations.weight.original.requires_grad_(False)
    head.parametrizations.weight.original.requires_grad_(False)


def merge_row_adapters(model: nn.Module) -> nn.Module:
    """Write every `AddedRows` into its weight (in place); modules that shared one share the merged weight."""
    merged: dict[int, nn.Parameter] = {}
    for module in list(model.modules()):
        if not parametrize.is_parametrized(module, "weight"):
            continue
        [rows] = [each for each in module.parametrizations.weight if isinstance(each, AddedRows)]
        if id(rows) in merged:
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
            module.weight = merged[id(rows)]
            continue
        with torch.no_grad():
            value = module.weight.detach().clone()
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        module.weight = nn.Parameter(value, requires_grad=False)
        merged[id(rows)] = module.weight
    return model
