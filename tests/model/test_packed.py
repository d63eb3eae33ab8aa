"""Prepacked bf16 Linear layers give exactly the logits of the plain bf16 model, with and without the cache."""

from __future__ import annotations

import pytest
import torch

from hellogpt.decode.cache import BatchedKVCache
from hellogpt.model.gpt import GPT, GPTConfig
from hellogpt.model.packed import PackedLinear, can_pack_linear_layers, pack_linear_layers

CONFIG = GPTConfig(n_layer=2, n_head=4, n_embd=64, block_size=32, vocab_size=97, bias=True, dropout=0.0, arch="gpt2")


def bf16_model() -> GPT:
    torch.manual_seed(0)
    return GPT(CONFIG).to(torch.bfloat16).eval()


pytestmark = pytest.mark.skipif(
    not can_pack_linear_layers(torch.zeros(1, dtype=torch.bfloat16)), reason="no native bf16 oneDNN on this CPU"
)


def test_packing_keeps_parameters_tying_and_state_dict_names() -> None:
    plain = bf16_model()
    packed = pack_linear_layers(bf16_model())
    assert sum(isinstance(module, PackedLinear) for module in packed.modules()) == 2 * 4 + 1
    assert packed.lm_head.weight is packed.transformer.wte.weight
    assert list(packed.state_dict()) == list(plain.state_dict())
    assert packed.num_parameters() == plain.num_parameters()


@torch.inference_mode()
def test_packed_logits_equal_the_plain_bf16_logits_with_and_without_cache() -> None:
    plain = bf16_model()
    packed = pack_linear_layers(bf16_model())
    ids = torch.randint(0, CONFIG.vocab_size, (1, 12))
    assert torch.equal(packed(ids)[0], plain(ids)[0])
    cache = BatchedKVCache(packed, slots=1).sequences()
    packed.next_token_logits(ids[:, :8], cache)
    incremental = [packed.next_token_logits(ids[:, index : index + 1], cache) for index in range(8, 12)]
    full = plain(ids)[0][0, 8:12]
    assert torch.allclose(torch.cat(incremental).float(), full.float(), atol=0.05)
