"""Loading the model that `chat` and `serve` talk through: --checkpoint or --from, and flags over the config.

Both commands take the same model options, lay their flags over the resolved run config the same way,
and put the model on the device and dtype of `system` by one rule; this module is that shared part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from hellogpt.errors import UserError

if TYPE_CHECKING:
    from hellogpt.config.layers import Layer
    from hellogpt.data.tokenizer import Tokenizer
    from hellogpt.model.gpt import GPT

CheckpointOption = Annotated[
    Optional[str],
    typer.Option("--checkpoint", "-k", help="A hellogpt checkpoint: NAME (checkpoints/NAME.pt) or a path."),
]
SourceOption = Annotated[
    Optional[str],
    typer.Option("--from", help="A Hugging Face GPT-2: gpt2, gpt2-medium/large/xl, owner/name or a local folder."),
]
Gpt2BaseOption = Annotated[Optional[str], typer.Option("--gpt2base", hidden=True, help="Old name of --from.")]
DeviceOption = Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
QuantizeOption = Annotated[
    Optional[str],
    typer.Option("--quantize", help="int8: int8 weights, about a quarter of the bytes read per token (CPU) [default: none]."),
]


@dataclass(frozen=True)
class LoadedModel:
    """A model on the CPU in fp32 with its tokenizer, what it is, and the sample defaults it carries.

    `name` is the short id clients use for it (a checkpoint's file stem, or the --from source).
    """

    model: "GPT"
    tokenizer: "Tokenizer"
    name: str
    info: dict[str, Any]
    sample_defaults: Optional["Layer"]


def one_model_source(checkpoint: Optional[str], source: Optional[str]) -> Optional[str]:
    """The --from source, after checking that exactly one of --checkpoint and --from was given."""
    if checkpoint and source:
        raise UserError("give either --checkpoint (a hellogpt checkpoint) or --from (a Hugging Face model), not both")
    if not checkpoint and not source:
        raise UserError("which model? give --checkpoint NAME (a hellogpt checkpoint) or --from gpt2|DIR (Hugging Face)")
    return source


def load_model(checkpoint: Optional[str], source: Optional[str]) -> LoadedModel:
    """Load a Hugging Face GPT-2 (`source`) or a hellogpt checkpoint, with the sample section it was saved with."""
    from hellogpt.config.layers import Layer

    if source is not None:
        from hellogpt.data.tokenizer import gpt2_tokenizer
        from hellogpt.model.hf import load_pretrained

        model, origin = load_pretrained(source)
        name = source.rstrip("/\\") or source
        tokenizer = gpt2_tokenizer()
        tokenizer.load()
        return LoadedModel(model, tokenizer, name, {"model": source, "origin": origin_text(origin)}, None)
    from hellogpt.checkpoints.format import load_checkpoint
    from hellogpt.checkpoints.loading import model_from_checkpoint, tokenizer_from_checkpoint
    from hellogpt.checkpoints.paths import resolve_checkpoint_path
    from hellogpt.data.tokenizer import Gpt2Tokenizer

    path = resolve_checkpoint_path(checkpoint or "")
    saved = load_checkpoint(path)
    tokenizer = tokenizer_from_checkpoint(saved)
    if isinstance(tokenizer, Gpt2Tokenizer):
        tokenizer.load()
    model = model_from_checkpoint(saved)
    info = {"model": str(path), "origin": origin_text(saved.origin), "step": saved.step}
    if saved.val_loss is not None:
        info["val loss"] = f"{saved.val_loss:.4f}"
    saved_sample = (saved.config or {}).get("sample")
    defaults = Layer(f"checkpoint {path.name}", {"sample": dict(saved_sample)}) if isinstance(saved_sample, dict) else None
    return LoadedModel(model, tokenizer, path.stem, info, defaults)


def origin_text(origin: Any) -> str:
    """Where a model came from, in a few words."""
    if not isinstance(origin, dict):
        return "unknown"
    if origin.get("kind") == "huggingface":
        return f"Hugging Face {origin.get('source')}"
    if origin.get("kind") == "checkpoint":
        return f"fine-tuned from {origin.get('path')} (step {origin.get('step')})"
    return "trained from scratch"


def with_flags(run_config: Any, flags_by_section: dict[str, dict[str, Any]]) -> Any:
    """Lay the given flags over the resolved config, checked by the schema and reported by flag name."""
    from pydantic import ValidationError

    updated = run_config.model_dump()
    given = {
        (section, key): value for section, values in flags_by_section.items() for key, value in values.items()
        if value is not None
    }
    for (section, key), value in given.items():
        updated[section][key] = value
    try:
        return type(run_config).model_validate(updated)
    except ValidationError as error:
        problem = error.errors()[0]
        section, key = problem["loc"][0], problem["loc"][1]
        flag = "--" + str(key).replace("_", "-")
        raise UserError(f"{flag} {given[(section, key)]}: {problem['msg'].removeprefix('Value error, ')}") from None


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
