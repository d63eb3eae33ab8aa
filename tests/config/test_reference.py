"""The configuration reference in the docs is the schema's own defaults and descriptions, never a copy that drifts."""

from __future__ import annotations

from pathlib import Path

import pytest

from hellogpt.config.reference import (
    END_MARKER,
    REGENERATE_COMMAND,
    START_MARKER,
    current_block,
    main,
    render_reference,
    replace_block,
)
from hellogpt.config.schema import RunConfig
from hellogpt.errors import UserError

REFERENCE_DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_the_documented_reference_is_the_schema() -> None:
    documented = current_block(REFERENCE_DOC.read_text(encoding="utf-8"), shown_as=str(REFERENCE_DOC))
    assert documented == render_reference(), (
        f"docs/configuration.md's config table differs from hellogpt/config/schema.py: "
        f"run `{REGENERATE_COMMAND} docs/configuration.md`"
    )


def test_every_key_of_every_section_has_a_row_and_a_description() -> None:
    table = render_reference()
    for section_name, section_field in RunConfig.model_fields.items():
        assert f"| **`{section_name}`** |" in table
        for key, field in section_field.annotation.model_fields.items():
            assert f"| `{section_name}.{key}` |" in table
            assert field.description, f"{section_name}.{key} has no description in the schema"


def test_defaults_are_written_as_yaml_would_take_them() -> None:
    table = render_reference()
    assert "| `model.bias` | `false` |" in table
    assert "| `sample.top_p` | unset |" in table
    assert "| `lora.targets` | unset |" in table


def test_fixed_choices_are_listed_from_the_type() -> None:
    assert "One of `auto`, `float32`, `bfloat16`, `float16`." in render_reference()


def test_write_replaces_only_the_marked_block(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(f"before\n\n{START_MARKER}\nstale\n{END_MARKER}\n\nafter\n", encoding="utf-8")
    assert main(["--write", str(doc)]) == 0
    assert doc.read_text(encoding="utf-8") == f"before\n\n{START_MARKER}\n{render_reference()}{END_MARKER}\n\nafter\n"


def test_a_file_without_markers_is_one_user_error() -> None:
    with pytest.raises(UserError, match="config-reference:start"):
        replace_block("no markers here\n", render_reference(), shown_as="doc.md")
