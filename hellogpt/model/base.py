"""What every architecture shares: its config, the KV cache it writes into, causal attention, and the model's
outer loop (embed, blocks, final norm, head, loss) over the parts an architecture file defines.

An architecture (`gpt.py` GPT-2, `qwen3.py` Qwen3) is one `CausalLM` subclass: how tokens and positions become
the residual stream (`embed`), what attention needs to know of positions (`attention_positions`), its blocks'
parts (`Block.layers()`) and the one function that runs a block over them (`block_forward`). Training, the
cached forward and the lean decoding step (`hellogpt.decode.step`) all run those, so each block is written once.
Pure torch: imports nothing else of ours.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

Rows = Callable[[torch.Tensor], torch.Tensor]
# attend(q, k, v) -> attended values, each (..., n_embd): attention over whatever the caller caches.
Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
# block_forward(x, the block's parts, attend, what attention knows of the positions) -> x
BlockFunction = Callable[[torch.Tensor, Any, Attend, Any], torch.Tensor]


@dataclass(frozen=True)
class GPTConfig:
    """The architecture; `asdict` of it is what checkpoints store as `model_args`.

    No defaults: those live in the config schema (`model` section), and a model built in code states its shape.
    `arch` names the architecture file (`hellogpt.model.architectures`); a stored config without it is GPT-2."""

    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    vocab_size: int
    dropout: float
    bias: bool
    arch: str

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


GPT2_SMALL = GPTConfig(
    n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50304, dropout=0.0, bias=True, arch="gpt2"
)
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


def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_head: int, layer: int, cache: Optional[KVCache],
    dropout: float,
) -> torch.Tensor:
    """Causal attention of whole sequences (batch, length, width), over `cache` and themselves when given."""
    batch, length, width = q.shape
    q, k, v = (t.view(batch, length, n_head, width // n_head).transpose(1, 2) for t in (q, k, v))
    mask, is_causal = None, True
    if cache is not None:
        past = cache.length
        k, v = cache.store(layer, k, v)
        if past > 0:
            # New queries see every cached position and the causal part of their own block.
            is_causal = False
            if length > 1:
                mask = torch.ones(length, past + length, dtype=torch.bool, device=q.device).tril(diagonal=past)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal)
    return y.transpose(1, 2).contiguous().view(batch, length, width)


class CausalLM(nn.Module):
    """A decoder-only language model: `embed`, the blocks, `final_norm` and `lm_head`; subclasses build them."""

    config: GPTConfig
    blocks: nn.ModuleList
    final_norm: nn.Module
    lm_head: nn.Module
    block_forward: BlockFunction
    # Weights shared by name (the tied LM head): `state_dict` holds both, a checkpoint may hold only the source.
    tied_weights: dict[str, str] = {}

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        # A training setting, not architecture: blocks keep only their input and recompute the rest in backward.
        self.activation_checkpointing = False

    def embed(self, token_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The residual stream's start for `token_ids` at `positions` (same shape but the width)."""
        raise NotImplementedError

    def attention_positions(self, positions: torch.Tensor) -> Any:
        """What each block's attention needs to know of `positions` (rotary tables, say), computed once per forward."""
        return None

    def input_embeddings(self) -> nn.Embedding:
        """The token embedding: where the model's weights live and in which dtype (the LM head may be int8)."""
        raise NotImplementedError

    def finish_loading(self) -> None:
        """Re-tie shared weights and rebuild tables derived from the config, after `load_state_dict(assign=True)`
        onto a model built on the meta device (assigning unties; non-persistent buffers stay on meta)."""

    def num_parameters(self, exclude_position_embeddings: bool = True) -> int:
        """Parameter count, shared ones once; learned position embeddings excluded by default (no matmul work)."""
        return sum(parameter.numel() for parameter in self.parameters())

    def flops_per_token(self, sequence_length: Optional[int] = None) -> float:
        """Training FLOPs per token (forward and backward): 6N + 12·L·H·Q·T (PaLM appendix B); N counts the
        matrices a token multiplies by (the LM head included, position embeddings not)."""
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
        x = self.embed(idx, positions)
        placed = self.attention_positions(positions)
        recompute = self.activation_checkpointing and self.training and cache is None and torch.is_grad_enabled()
        for layer, block in enumerate(self.blocks):
            if recompute:
                # Non-reentrant: works under DDP and with frozen weights; dropout replays the same RNG draws.
                x = checkpoint(block, x, layer, None, placed, use_reentrant=False)
            else:
                x = block(x, layer, cache, placed)
        if cache is not None:
            cache.advance(length)
        return self.final_norm(x)
