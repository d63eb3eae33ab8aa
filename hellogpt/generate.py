"""Getting a model ready to decode on this machine: its weights' device, dtype and layout, and its threads.

The decoding itself (sampling, the per-sequence state, the batched step over one KV cache) is `hellogpt.decode`.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from hellogpt.decode.cache import BatchedKVCache, prefill_slot
from hellogpt.decode.step import DecodingModel, decode_step
from hellogpt.errors import UserError
from hellogpt.hardware.probes.packing import should_pack_bf16
from hellogpt.hardware.probes.threads import choose_threads
from hellogpt.model.gpt import GPT
from hellogpt.model.packed import can_pack_linear_layers, pack_linear_layers
from hellogpt.model.quantize import quantize_int8


def prepare_for_inference(
    model: GPT, device: torch.device, dtype: torch.dtype, measure: Optional[str] = None
) -> GPT:
    """Move and cast the weights once (no per-op autocast), switch off dropout, and prepack bf16 CPU weights
    where this machine's probe measured that packing pays (`hellogpt.hardware.probes.packing`; never when
    `measure`, system.measure, is off)."""
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    if not can_pack_linear_layers(model.lm_head.weight):
        return model
    return pack_linear_layers(model) if should_pack_bf16(measure) else model


def choose_decode_threads(model: GPT, measure: Optional[str] = None) -> int:
    """Set torch's intra-op threads to whichever decodes `model` faster here, all of them or one, and return it
    (`hellogpt.hardware.probes.threads`; under `measure` off, torch's threads stay as they are)."""
    if model.input_embeddings().weight.device.type != "cpu" or model.config.block_size < 2:
        return torch.get_num_threads()
    return choose_threads(_repeatable_decoding_step(model), measure)


def _repeatable_decoding_step(model: GPT) -> Callable[[], None]:
    """One cached decoding step at the same position each call (the cache is rewound), moving no RNG."""
    cache = BatchedKVCache(model, slots=1, max_length=2)
    decoding = DecodingModel(model)
    with torch.inference_mode():
        prefill_slot(model, cache, 0, [0])

    def step() -> None:
        with torch.inference_mode():
            decode_step(decoding, cache, {0: 0})
        cache.lengths[0] = 1

    return step


def prepare_int8_for_inference(model: GPT, device: torch.device) -> GPT:
    """fp32 activations over int8 weights (`model/quantize.py`): a quarter of fp32's bytes per token. CPU only."""
    if device.type != "cpu":
        raise UserError(
            f"int8 weights run on the CPU only (torch's int8 kernels), not {device.type}: "
            "use --device cpu, or drop --quantize (GPUs decode in bf16/fp16)"
        )
    model = model.to(device=device, dtype=torch.float32).eval().requires_grad_(False)
    return quantize_int8(model)
