"""GPT-2 as one torch module: learned positions, pre-LayerNorm blocks, GELU, a tied LM head.

Module names follow GPT-2's (`transformer.h.0.attn.c_attn`, ...) so that Hugging Face weights map onto ours by
name. The block is written once (`block_forward`), for training, the cached forward and decoding; what every
architecture shares is `base.py`. Pure torch: imports nothing else of ours.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from hellogpt.model.base import (  # noqa: F401  (GPTConfig, GPT2_SMALL, KVCache: imported from here by many)
    GPT2_SMALL,
    Attend,
    CausalLM,
    GPTConfig,
    KVCache,
    Rows,
    causal_attention,
)

INIT_STD = 0.02


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.dropout = config.dropout

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: int, cache: Optional[KVCache]
    ) -> torch.Tensor:
        """Causal attention of whole sequences (batch, length, width), over `cache` and themselves when given."""
        return causal_attention(q, k, v, self.n_head, layer, cache, self.dropout if self.training else 0.0)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    @staticmethod
    def activation(x: torch.Tensor) -> torch.Tensor:
        """GPT-2's GELU, tanh-approximated."""
        return F.gelu(x, approximate="tanh")


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def layers(self, dropout: bool = True) -> BlockLayers:
        """This block's parts for `block_forward`; without `dropout`, the plain layers (what decoding runs)."""
        attn, mlp = self.attn, self.mlp
        if not dropout:
            return BlockLayers(self.ln_1, attn.c_attn, attn.c_proj, self.ln_2, mlp.c_fc, mlp.activation, mlp.c_proj)
        return BlockLayers(
            self.ln_1, attn.c_attn, lambda y: attn.resid_dropout(attn.c_proj(y)),
            self.ln_2, mlp.c_fc, mlp.activation, lambda y: mlp.dropout(mlp.c_proj(y)),
        )

    def forward(self, x: torch.Tensor, layer: int, cache: Optional[KVCache], positions: Any = None) -> torch.Tensor:
        return block_forward(x, self.layers(), lambda q, k, v: self.attn.attend(q, k, v, layer, cache), positions)


class BlockLayers(NamedTuple):
    """One block's parts as callables on rows: `Block` passes its modules, the decoding step lean versions of the
    same weights (`hellogpt.decode.step`), so that the block itself is written once, in `block_forward`."""

    ln_1: Rows
    qkv: Rows
    projection: Rows
    ln_2: Rows
    up: Rows
    activation: Rows
    down: Rows


def block_forward(x: torch.Tensor, layers: BlockLayers, attend: Attend, positions: Any = None) -> torch.Tensor:
    """GPT-2's pre-LayerNorm block: attention, then the MLP, each added to the residual stream. Training, the
    cached forward and the decoding step all run this; `attend(q, k, v)` is attention over whatever they cache.
    Positions are already in the residual stream (learned embeddings): attention needs nothing of them."""
    q, k, v = layers.qkv(layers.ln_1(x)).split(x.shape[-1], dim=-1)
    x = x + layers.projection(attend(q, k, v))
    return x + layers.down(layers.activation(layers.up(layers.ln_2(x))))


class GPT(CausalLM):
    """GPT-2: learned positions, pre-LayerNorm blocks, GELU, tied token embedding and LM head."""

    block_forward = staticmethod(block_forward)
    # Weight tying: the output projection is the token embedding (GPT-2, and a third fewer parameters here).
    tied_weights = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.finish_loading()
        self.apply(self._init_weights)
        # GPT-2 scales the residual projections so the residual stream's variance does not grow with depth.
        for name, parameter in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(parameter, mean=0.0, std=INIT_STD / math.sqrt(2 * config.n_layer))

    @property
    def blocks(self) -> nn.ModuleList:
        return self.transformer.h

    @property
    def final_norm(self) -> nn.Module:
        return self.transformer.ln_f

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)

    def embed(self, token_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Token plus learned position embeddings (dropout while training)."""
        transformer = self.transformer
        tokens = F.embedding(token_ids, transformer.wte.weight)
        return transformer.drop(tokens + F.embedding(positions, transformer.wpe.weight))

    def input_embeddings(self) -> nn.Embedding:
        return self.transformer.wte

    def finish_loading(self) -> None:
        self.lm_head.weight = self.transformer.wte.weight

    def num_parameters(self, exclude_position_embeddings: bool = True) -> int:
        """Parameter count; position embeddings excluded by default (they do no matmul work)."""
        total = sum(parameter.numel() for parameter in self.parameters())
        return total - self.transformer.wpe.weight.numel() if exclude_position_embeddings else total
