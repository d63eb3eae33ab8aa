"""The options `chat` and `serve` share to pick a model (--checkpoint or --from, --device, --quantize) and to lay
their flags over the resolved run config; loading the model itself is `hellogpt.model_source`."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from hellogpt.errors import UserError

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


def one_model_source(checkpoint: Optional[str], source: Optional[str]) -> Optional[str]:
    """The --from source, after checking that exactly one of --checkpoint and --from was given."""
    if checkpoint and source:
        raise UserError("give either --checkpoint (a hellogpt checkpoint) or --from (a Hugging Face model), not both")
    if not checkpoint and not source:
        raise UserError("which model? give --checkpoint NAME (a hellogpt checkpoint) or --from gpt2|DIR (Hugging Face)")
    return source


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
