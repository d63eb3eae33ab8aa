"""The GPT-2 architecture as one torch module; its block is written once (`block_forward`) for training and decoding.

Module names follow GPT-2's (`transformer.h.0.attn.c_attn`, ...) so that Hugging Face
weights map onto ours by name. Pure torch: imports nothing else of ours.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, NamedTuple, Optional, Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

INIT_STD = 0.02
Rows = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class GPTConfig:
    """The architecture; `asdict` of it is what checkpoints store as `model_args`.

    No defaults: those live in the config schema (`model` section), and a model built in code states its shape."""

    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    vocab_size: int
    dropout: float
    bias: bool

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


GPT2_SMALL = GPTConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50304, dropout=0.0, bias=True)
"""GPT-2 small (124M, the vocabulary padded to a multiple of 64): what a stored `model_args` that lacks a key was
read with while GPTConfig had defaults, so such a checkpoint still loads as it did."""


class KVCache(Protocol):
    """What the cached forward needs of a KV cache (`hellogpt.decode.cache` holds the one implementation): where the
    cached sequences are, and a place to write each layer's new keys and values."""

    @property
    def length(self) -> int: ...

    def store(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this step's keys/values for `layer`; return all keys/values so far."""
        ...

    def advance(self, n_tokens: int) -> None: ...


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
        batch, length, width = q.shape
        q, k, v = (t.view(batch, length, self.n_head, width // self.n_head).transpose(1, 2) for t in (q, k, v))
        mask, is_causal = None, True
        if cache is not None:
            past = cache.length
            k, v = cache.store(layer, k, v)
            if past > 0:
                # New queries see every cached position and the causal part of their own block.
                is_causal = False
                if length > 1:
                    mask = torch.ones(length, past + length, dtype=torch.bool, device=q.device).tril(diagonal=past)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0, is_causal=is_causal
        )
        return y.transpose(1, 2).contiguous().view(batch, length, width)


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

    def forward(self, x: torch.Tensor, layer: int, cache: Optional[KVCache]) -> torch.Tensor:
        return block_forward(x, self.layers(), lambda q, k, v: self.attn.attend(q, k, v, layer, cache))


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


def block_forward(x: torch.Tensor, layers: BlockLayers, attend: Callable[..., torch.Tensor]) -> torch.Tensor:
    """GPT-2's pre-LayerNorm block: attention, then the MLP, each added to the residual stream. Training, the
    cached forward and the decoding step all run this; `attend(q, k, v)` is attention over whatever they cache."""
    q, k, v = layers.qkv(layers.ln_1(x)).split(x.shape[-1], dim=-1)
    x = x + layers.projection(attend(q, k, v))
    return x + layers.down(layers.activation(layers.up(layers.ln_2(x))))


class GPT(nn.Module):
    """GPT-2: learned positions, pre-LayerNorm blocks, GELU, tied token embedding and LM head."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
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
        # A training setting, not architecture: blocks keep only their input and recompute the rest in backward.
        self.activation_checkpointing = False
        # Weight tying: the output projection is the token embedding (GPT-2, and a third fewer parameters here).
        self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        # GPT-2 scales the residual projections so the residual stream's variance does not grow with depth.
        for name, parameter in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(parameter, mean=0.0, std=INIT_STD / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)

    def num_parameters(self, exclude_position_embeddings: bool = True) -> int:
        """Parameter count; position embeddings excluded by default (they do no matmul work)."""
        total = sum(parameter.numel() for parameter in self.parameters())
        return total - self.transformer.wpe.weight.numel() if exclude_position_embeddings else total

    def flops_per_token(self, sequence_length: Optional[int] = None) -> float:
        """Training FLOPs per token (forward and backward): 6N + 12·L·H·Q·T (PaLM appendix B)."""
        config = self.config
        length = sequence_length or config.block_size
        return 6 * self.num_parameters() + 12 * config.n_layer * config.n_head * config.head_dim * length

    def forward(
        self, idx: torch.Tensor, targets: Optional[torch.Tensor] = None, cache: Optional[KVCache] = None
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Logits for every position; with `targets`, also the mean cross-entropy (-1 targets ignored)."""
        logits = self.lm_head(self._hidden_states(idx, cache))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def next_token_logits(self, idx: torch.Tensor, cache: Optional[KVCache] = None) -> torch.Tensor:
        """Logits of the last position only, shape (batch, vocab): decoding skips the LM head elsewhere."""
        hidden = self._hidden_states(idx, cache)
        return self.lm_head(hidden[:, -1, :])

    def _hidden_states(self, idx: torch.Tensor, cache: Optional[KVCache]) -> torch.Tensor:
        length = idx.size(1)
        start = cache.length if cache is not None else 0
        if start + length > self.config.block_size:
            raise ValueError(f"sequence of {start + length} tokens exceeds block_size {self.config.block_size}")
        positions = torch.arange(start, start + length, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(positions))
        recompute = self.activation_checkpointing and self.training and cache is None and torch.is_grad_enabled()
        for layer, block in enumerate(self.transformer.h):
            if recompute:
                # Non-reentrant: works under DDP and with frozen weights; dropout replays the same RNG draws.
                x = checkpoint(block, x, layer, None, use_reentrant=False)
            else:
                x = block(x, layer, cache)
        if cache is not None:
            cache.advance(length)
        return self.transformer.ln_f(x)
