"""Qwen3's architecture as one torch module: RMSNorm, rotary positions, per-head RMSNorm on queries and keys
(QK-norm), a SwiGLU MLP, no biases and an untied LM head; initialised as the speedruns do.

The block computes what transformers' `Qwen3ForCausalLM` computes, and the modules carry its names
(`model.layers.0.self_attn.q_proj`, ...), so that an export is its state dict as it is (`hellogpt.model.hf`) and
llama.cpp converts it. Why this block and not another: docs/architectures.md. Pure torch.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from hellogpt.model.base import Attend, CausalLM, GPTConfig, KVCache, Rows, causal_attention

# transformers' Qwen3Config default, and every released Qwen3's.
RMS_NORM_EPS = 1e-6
# The classic rotary base: our contexts are short (Qwen3 itself uses 1e6 for 32k and more).
ROPE_THETA = 10000.0
# SwiGLU has three matrices where GPT-2's MLP has two: 8/3 of the width keeps the parameters of GPT-2's 4x,
# rounded up to a multiple of this so that the products stay in whole SIMD/tensor-core tiles.
INTERMEDIATE_MULTIPLE = 64
# Speedrun initialisation (nanochat, modded-nanogpt): the residual branches' output projections start at zero, so
# each block begins as the identity; the LM head starts nearly zero (uniform first predictions), the embedding at 1.
HEAD_INIT_STD = 0.001
EMBEDDING_INIT_STD = 1.0


def intermediate_size(config: GPTConfig) -> int:
    """Width of the SwiGLU's hidden layer: 8/3 of the residual stream's, rounded up to a multiple of 64."""
    return -(-8 * config.n_embd // (3 * INTERMEDIATE_MULTIPLE)) * INTERMEDIATE_MULTIPLE


def rotary_tables(config: GPTConfig, device: Optional[torch.device] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of every position's rotation angles, (block_size, head_dim), computed as transformers does."""
    head_dim = config.head_dim
    even_dims = torch.arange(0, head_dim, 2, dtype=torch.float, device=device)
    inverse_frequencies = 1.0 / (ROPE_THETA ** (even_dims / head_dim))
    positions = torch.arange(config.block_size, dtype=torch.float, device=device)
    angles = positions[:, None] * inverse_frequencies[None, :]
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding of `x` (..., heads, head_dim): each pair (i, i + head_dim/2) turned by its angle."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


class RMSNorm(nn.RMSNorm):
    """`nn.RMSNorm` of its input cast to the gain's dtype: under autocast the input arrives in bf16 while the gain
    stays fp32, and torch's fused kernel takes one dtype (transformers normalises in fp32 as well)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.to(self.weight.dtype), self.normalized_shape, self.weight, self.eps)


class Qwen3Attention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        width, head_dim = config.n_embd, config.head_dim
        self.q_proj = nn.Linear(width, width, bias=False)
        self.k_proj = nn.Linear(width, width, bias=False)
        self.v_proj = nn.Linear(width, width, bias=False)
        self.o_proj = nn.Linear(width, width, bias=False)
        self.q_norm = RMSNorm(head_dim, eps=RMS_NORM_EPS)
        self.k_norm = RMSNorm(head_dim, eps=RMS_NORM_EPS)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.dropout = config.dropout


class Qwen3MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        hidden = intermediate_size(config)
        self.gate_proj = nn.Linear(config.n_embd, hidden, bias=False)
        self.up_proj = nn.Linear(config.n_embd, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, config.n_embd, bias=False)
        self.dropout = nn.Dropout(config.dropout)


class Qwen3Layers(NamedTuple):
    """One Qwen3 block's parts as callables on rows (see `hellogpt.model.gpt.BlockLayers`)."""

    input_norm: Rows
    q: Rows
    k: Rows
    v: Rows
    q_norm: Rows
    k_norm: Rows
    output: Rows
    post_norm: Rows
    gate: Rows
    up: Rows
    activation: Rows
    down: Rows


def block_forward(
    x: torch.Tensor, layers: Qwen3Layers, attend: Attend, rotation: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """Qwen3's decoder layer: RMSNorm, attention over normalised and rotated queries and keys, RMSNorm, SwiGLU,
    each added to the residual stream. `rotation`: the rows' cos and sin, (..., 1, head_dim)."""
    cos, sin = rotation
    head_dim = cos.shape[-1]
    h = layers.input_norm(x)
    q = rotate(layers.q_norm(layers.q(h).unflatten(-1, (-1, head_dim))), cos, sin).flatten(-2)
    k = rotate(layers.k_norm(layers.k(h).unflatten(-1, (-1, head_dim))), cos, sin).flatten(-2)
    x = x + layers.output(attend(q, k, layers.v(h)))
    h = layers.post_norm(x)
    return x + layers.down(layers.activation(layers.gate(h)) * layers.up(h))


class Qwen3Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.n_embd, eps=RMS_NORM_EPS)
        self.self_attn = Qwen3Attention(config)
        self.post_attention_layernorm = RMSNorm(config.n_embd, eps=RMS_NORM_EPS)
        self.mlp = Qwen3MLP(config)

    def layers(self, dropout: bool = True) -> Qwen3Layers:
        """This block's parts for `block_forward`; without `dropout`, the plain layers (what decoding runs)."""
        attn, mlp = self.self_attn, self.mlp
        output, down = attn.o_proj, mlp.down_proj
        if dropout:
            output, down = (lambda y: attn.resid_dropout(attn.o_proj(y))), (lambda y: mlp.dropout(mlp.down_proj(y)))
        return Qwen3Layers(
            self.input_layernorm, attn.q_proj, attn.k_proj, attn.v_proj, attn.q_norm, attn.k_norm, output,
            self.post_attention_layernorm, mlp.gate_proj, mlp.up_proj, F.silu, down,
        )

    def forward(
        self, x: torch.Tensor, layer: int, cache: Optional[KVCache], rotation: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        attn = self.self_attn
        dropout = attn.dropout if self.training else 0.0
        return block_forward(
            x, self.layers(), lambda q, k, v: causal_attention(q, k, v, attn.n_head, layer, cache, dropout), rotation
        )


class Qwen3(CausalLM):
    """Qwen3 (dense, one key/value head per query head): token embedding, blocks, RMSNorm, untied LM head."""

    block_forward = staticmethod(block_forward)

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        self.model = nn.ModuleDict(
            dict(
                embed_tokens=nn.Embedding(config.vocab_size, config.n_embd),
                layers=nn.ModuleList(Qwen3Block(config) for _ in range(config.n_layer)),
                norm=RMSNorm(config.n_embd, eps=RMS_NORM_EPS),
            )
        )
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.finish_loading()
        self._init_weights()

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.layers

    @property
    def final_norm(self) -> nn.Module:
        return self.model.norm

    def _init_weights(self) -> None:
        input_std = self.config.n_embd**-0.5
        nn.init.normal_(self.model.embed_tokens.weight, mean=0.0, std=EMBEDDING_INIT_STD)
        nn.init.normal_(self.lm_head.weight, mean=0.0, std=HEAD_INIT_STD)
        for block in self.model.layers:
            attn, mlp = block.self_attn, block.mlp
            for layer in (attn.q_proj, attn.k_proj, attn.v_proj, mlp.gate_proj, mlp.up_proj):
                nn.init.normal_(layer.weight, mean=0.0, std=input_std)
            nn.init.zeros_(attn.o_proj.weight)
            nn.init.zeros_(mlp.down_proj.weight)

    def embed(self, token_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The token embedding alone: positions enter attention as rotations (`attention_positions`)."""
        return self.embedding_dropout(F.embedding(token_ids, self.model.embed_tokens.weight))

    def attention_positions(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The rotary tables' rows of `positions`, shaped to broadcast over the heads."""
        return self.rotary_cos[positions].unsqueeze(-2), self.rotary_sin[positions].unsqueeze(-2)

    def input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def finish_loading(self) -> None:
        """(Re)build the rotary tables beside the weights: derived from the config, never stored in a checkpoint."""
        weight = self.model.embed_tokens.weight
        cos, sin = rotary_tables(self.config, weight.device)
        self.register_buffer("rotary_cos", cos.to(weight.dtype), persistent=False)
        self.register_buffer("rotary_sin", sin.to(weight.dtype), persistent=False)

    def flops_per_token(self, sequence_length: Optional[int] = None) -> float:
        """As `CausalLM`'s, with N leaving out the token embedding: untied, it is a lookup, not a product."""
        config = self.config
        length = sequence_length or config.block_size
        matrices = self.num_parameters() - self.model.embed_tokens.weight.numel()
        return 6 * matrices + 12 * config.n_layer * config.n_head * config.head_dim * length
