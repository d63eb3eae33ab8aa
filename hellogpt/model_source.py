"""The model that `chat` and `serve` talk through: loaded from a checkpoint or a Hugging Face model, then placed.

Loading (a checkpoint with its tokenizer and saved sample settings, or a Hugging Face GPT-2) and putting the model
on the device and dtype of `system` by one rule is core work: the CLI's `chat` and `serve` commands (and anything
else) call it; the command-line options for it live in `hellogpt.cli.model_options`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from hellogpt.errors import UserError

if TYPE_CHECKING:
    from hellogpt.config.layers import Layer
    from hellogpt.data.tokenizer import Tokenizer
    from hellogpt.model.gpt import GPT


@dataclass(frozen=True)
class LoadedModel:
    """A model on the CPU in fp32 with its tokenizer, what it is, and the sample defaults it carries.

    `name` is the short id clients use for it (a checkpoint's file stem, or the --from source). A chat model has its
    `chat_template` (the Jinja string its checkpoint stores) and a tokenizer with the template's markers.
    """

    model: "GPT"
    tokenizer: "Tokenizer"
    name: str
    info: dict[str, Any]
    sample_defaults: Optional["Layer"]
    chat_template: Optional[str] = None


def load_model(checkpoint: Optional[str], source: Optional[str]) -> LoadedModel:
    """Load a Hugging Face model (`source`: GPT-2, or our export with the tokenizer it records) or a hellogpt
    checkpoint, with the sample section it was saved with."""
    from hellogpt.config.layers import Layer

    from hellogpt.checkpoints.loading import checkpoint_tokenizer, model_from_checkpoint, model_tokenizer
    from hellogpt.data.tokenizer import Gpt2Tokenizer, tokenizer_from_description

    if source is not None:
        from hellogpt.model.hf import load_pretrained, pretrained_tokenizer

        model, origin = load_pretrained(source)
        name = source.rstrip("/\\") or source
        description, chat_template = pretrained_tokenizer(source)
        base = tokenizer_from_description(description)
        tokenizer = model_tokenizer(base, chat_template, model.config.vocab_size, source)
        if isinstance(tokenizer, Gpt2Tokenizer):
            tokenizer.load()
        info = {"model": source, "origin": origin_text(origin)}
        return LoadedModel(model, tokenizer, name, info, None, chat_template)
    from hellogpt.checkpoints.format import load_checkpoint
    from hellogpt.checkpoints.paths import resolve_checkpoint_path

    path = resolve_checkpoint_path(checkpoint or "")
    saved = load_checkpoint(path)
    tokenizer = checkpoint_tokenizer(saved, saved.model_args.vocab_size, path)
    if isinstance(tokenizer, Gpt2Tokenizer):
        tokenizer.load()
    model = model_from_checkpoint(saved)
    info = {"model": str(path), "origin": origin_text(saved.origin), "step": saved.step}
    if saved.val_loss is not None:
        info["val loss"] = f"{saved.val_loss:.4f}"
    saved_sample = (saved.config or {}).get("sample")
    defaults = Layer(f"checkpoint {path.name}", {"sample": dict(saved_sample)}) if isinstance(saved_sample, dict) else None
    return LoadedModel(model, tokenizer, path.stem, info, defaults, saved.chat_template)


def origin_text(origin: Any) -> str:
    """Where a model came from, in a few words."""
    if not isinstance(origin, dict):
        return "unknown"
    if origin.get("kind") == "huggingface":
        return f"Hugging Face {origin.get('source')}"
    if origin.get("kind") == "checkpoint":
        return f"fine-tuned from {origin.get('path')} (step {origin.get('step')})"
    return "trained from scratch"


def model_for_inference(loaded: LoadedModel, config: Any, choose_threads: bool = True) -> "GPT":
    """The loaded model on `system.device`, its weights in the dtype `system.dtype` chooses or in int8
    (`system.quantize`), ready to decode; `choose_threads` times the decoding threads here (the server does it on
    its generation thread instead)."""
    from hellogpt.generate import choose_decode_threads, prepare_for_inference, prepare_int8_for_inference
    from hellogpt.hardware.devices import choose_dtype

    device = choose_device_for(config.system)
    if config.system.quantize == "int8":
        model = prepare_int8_for_inference(loaded.model, device)
    else:
        dtype = choose_dtype(config.system.dtype, device, loaded.model.config)
        model = prepare_for_inference(loaded.model, device, dtype, measure=config.system.measure)
    if choose_threads:
        choose_decode_threads(model, config.system.measure)
    return model


def float32_scoring_model(loaded: LoadedModel, config: Any) -> Optional["GPT"]:
    """A float32 copy of the loaded weights on `system.device`, to score log-probabilities with, when
    `model_for_inference` will decode in another precision (bf16, fp16, int8); None when it decodes in float32.

    Call it before `model_for_inference`, which converts `loaded.model` in place: after that no fp32 weights are left
    to copy. The copy costs 4 bytes per parameter beside the decoding model (GPT-2 124M: 0.5 GB).
    """
    import copy

    import torch

    from hellogpt.generate import prepare_for_inference
    from hellogpt.hardware.devices import choose_dtype

    device = choose_device_for(config.system)
    if config.system.quantize == "none" and choose_dtype(config.system.dtype, device, loaded.model.config) == torch.float32:
        return None
    return prepare_for_inference(copy.deepcopy(loaded.model), device, torch.float32, measure=config.system.measure)


def choose_device_for(system: Any) -> Any:
    """`system.device`, checked against `system.quantize`: int8 weights run on the CPU, in fp32 activations."""
    from hellogpt.hardware.devices import choose_device

    device = choose_device(system.device)
    if system.quantize == "none":
        return device
    if device.type != "cpu":
        raise UserError(
            f"--quantize {system.quantize} runs on the CPU only (torch's int8 kernels), not {device}: "
            "add --device cpu, or drop --quantize (GPUs decode in bf16/fp16)"
        )
    if system.dtype not in ("auto", "float32"):
        raise UserError(
            f"--quantize {system.quantize} keeps activations in float32, so system.dtype={system.dtype} does not apply: "
            "drop it or use `--set system.dtype=auto`"
        )
    return device
