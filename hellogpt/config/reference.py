"""The configuration reference: a markdown table of every key, its default and its meaning, read from the schema.

The schema is the one place a default and its description are written; the table in the docs is this module's
output between two marker comments, and a test fails when the two drift. Regenerate it with
`python -m hellogpt.config.reference --write docs/configuration.md`.
"""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from hellogpt.config.schema import RunConfig
from hellogpt.errors import UserError

START_MARKER = "<!-- config-reference:start -->"
END_MARKER = "<!-- config-reference:end -->"
REGENERATE_COMMAND = "python -m hellogpt.config.reference --write"


def render_reference(config_type: type[BaseModel] = RunConfig) -> str:
    """The markdown table: one bold row per section (its docstring), then one row per key."""
    lines = ["| key | default | description |", "|---|---|---|"]
    for section_name, section_field in config_type.model_fields.items():
        section_type = section_field.annotation
        assert isinstance(section_type, type) and issubclass(section_type, BaseModel)
        lines.append(f"| **`{section_name}`** | | {_cell(_first_line(section_type.__doc__))} |")
        for key, field in section_type.model_fields.items():
            lines.append(f"| `{section_name}.{key}` | {_cell(_default_text(field))} | {_cell(_description(field))} |")
    return "\n".join(lines) + "\n"


def replace_block(text: str, table: str, *, shown_as: str) -> str:
    """`text` with the part between the markers replaced by `table`; a UserError when the markers are missing."""
    start, end = _marker_span(text, shown_as)
    return f"{text[:start]}{START_MARKER}\n{table}{text[end:]}"


def current_block(text: str, *, shown_as: str) -> str:
    """The table between the markers of `text`, as `render_reference` would return it."""
    start, end = _marker_span(text, shown_as)
    return text[start + len(START_MARKER) : end].lstrip("\n")


def _marker_span(text: str, shown_as: str) -> tuple[int, int]:
    start = text.find(START_MARKER)
    end = text.find(END_MARKER, start + 1)
    if start < 0 or end < 0:
        raise UserError(
            f"{shown_as} has no {START_MARKER} ... {END_MARKER} block: add the two lines where the table goes"
        )
    return start, end


def _default_text(field: FieldInfo) -> str:
    value: Any = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        return "`" + ", ".join(str(item) for item in value) + "`"
    return f"`{value}`"


def _description(field: FieldInfo) -> str:
    """The field's description, followed by its choices when its type is a fixed set of values."""
    description = field.description or ""
    choices = [] if field.annotation is bool else _choices(field.annotation)
    if choices:
        description = f"{description} One of {', '.join(f'`{choice}`' for choice in choices)}.".strip()
    return description


def _choices(annotation: Any) -> list[str]:
    """The values a `Literal` (or a union of literals and bool) allows; empty for open types."""
    if annotation is bool:
        return ["true", "false"]
    if typing.get_origin(annotation) is typing.Literal:
        return [str(value) for value in typing.get_args(annotation)]
    if typing.get_origin(annotation) is typing.Union:
        arguments = [argument for argument in typing.get_args(annotation) if argument is not type(None)]
        if any(typing.get_origin(argument) is typing.Literal for argument in arguments):
            return [choice for argument in arguments for choice in _choices(argument)]
    return []


def _first_line(docstring: Optional[str]) -> str:
    return (docstring or "").strip().splitlines()[0] if docstring else ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def main(argv: Optional[list[str]] = None) -> int:
    """Print the table, or with --write FILE put it between the markers of FILE."""
    parser = argparse.ArgumentParser(prog="python -m hellogpt.config.reference", description=main.__doc__)
    parser.add_argument("--write", type=Path, metavar="FILE", help="update the marked block of this markdown file")
    arguments = parser.parse_args(argv)
    table = render_reference()
    if arguments.write is None:
        sys.stdout.write(table)
        return 0
    from hellogpt.files import write_text_atomically

    path: Path = arguments.write
    try:
        text = path.read_text(encoding="utf-8")
        updated = replace_block(text, table, shown_as=str(path))
    except (OSError, UserError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if updated != text:
        write_text_atomically(path, updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
