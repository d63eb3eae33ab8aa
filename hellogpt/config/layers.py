"""Config layering: base -> profile -> files -> --set, with the provenance of every value.

Each layer is checked against the schema on its own, so an unknown key is
reported with the file that holds it; the merged result is validated once more
for types and cross-field rules.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import BaseModel, ValidationError

from hellogpt.config.legacy import LEGACY_KEYS, is_legacy_key, legacy_to_sections
from hellogpt.config.schema import SECTION_NAMES, RunConfig
from hellogpt.errors import UserError

BASE_LABEL = "base"
SET_LABEL = "--set"


@dataclass(frozen=True)
class Layer:
    """Sectioned values from one source, and the label that names the source."""

    label: str
    values: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class ResolvedConfig:
    """The validated config, the profile it started from and where each value came from."""

    config: RunConfig
    profile: Optional[str] = None
    provenance: dict[str, str] = field(default_factory=dict)

    def source_of(self, dotted_key: str) -> str:
        """The layer that set `section.key` (`base` when nothing overrode the default)."""
        return self.provenance.get(dotted_key, BASE_LABEL)


def builtin_profile_names() -> list[str]:
    """Names of the profiles shipped inside the package."""
    folder = resources.files("hellogpt.config") / "profiles"
    return sorted(entry.name[: -len(".yaml")] for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def load_command_defaults(name: str, label: str) -> Layer:
    """Defaults a command lays over the base before the profile (`profiles/defaults/NAME.yaml`, not a profile
    a user picks), labelled `label` in the provenance of what they set."""
    text = (resources.files("hellogpt.config") / "profiles" / "defaults" / f"{name}.yaml").read_text("utf-8")
    return Layer(label, _sections_from_text(text, f"{label} ({name}.yaml)"))


def load_profile(name_or_path: str) -> Layer:
    """A built-in profile by name, or a profile YAML file by path."""
    if name_or_path in builtin_profile_names():
        text = (resources.files("hellogpt.config") / "profiles" / f"{name_or_path}.yaml").read_text("utf-8")
        return Layer(f"profile {name_or_path}", _sections_from_text(text, f"profile '{name_or_path}'"))
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"} or path.exists():
        return Layer(f"profile {path}", _sections_from_file(path))
    choices = ", ".join(builtin_profile_names())
    hint = _closest(name_or_path, builtin_profile_names())
    suggestion = f" (did you mean '{hint}'?)" if hint else ""
    raise UserError(f"unknown profile '{name_or_path}'{suggestion}: choose one of {choices}, or give a YAML file path")


def load_config_file(path: Path) -> Layer:
    """A config file: sectioned YAML, or an old Hello-GPT flat file."""
    return Layer(f"file {path}", _sections_from_file(path))


def parse_override(assignment: str) -> Layer:
    """`section.key=value` (value parsed as a YAML scalar); an old flat key is accepted too."""
    key, separator, raw_value = assignment.partition("=")
    key = key.strip()
    if not separator or not key:
        raise UserError(f"--set '{assignment}': expected section.key=value, for example --set optim.learning_rate=3e-4")
    try:
        value = yaml.safe_load(raw_value) if raw_value.strip() else None
    except yaml.YAMLError:
        value = raw_value
    source = f"--set {key}"
    if "." not in key:
        if not is_legacy_key(key):
            raise UserError(f"{source}: expected section.key=value{_suggest_key(key)}")
        return Layer(SET_LABEL, legacy_to_sections({key: value}))
    section, _, name = key.partition(".")
    sections = {section: {name: value}}
    _check_keys(sections, source)
    return Layer(SET_LABEL, sections)


def resolve_config(
    profile: Optional[str] = None,
    config_files: tuple[Path, ...] | list[Path] = (),
    overrides: tuple[str, ...] | list[str] = (),
    defaults: Optional[Layer] = None,
) -> ResolvedConfig:
    """Merge the layers in order and validate; `defaults` lets a command lay its own defaults over base."""
    layers: list[Layer] = [defaults] if defaults else []
    if profile:
        layers.append(load_profile(profile))
    layers.extend(load_config_file(Path(path)) for path in config_files)
    layers.extend(parse_override(assignment) for assignment in overrides)
    return merge_layers(layers, profile=profile)


def merge_layers(layers: list[Layer], profile: Optional[str] = None) -> ResolvedConfig:
    """Lay `layers` over the schema defaults, later ones winning, and validate the result."""
    merged: dict[str, dict[str, Any]] = {}
    provenance: dict[str, str] = {}
    for layer in layers:
        for section, values in layer.values.items():
            merged.setdefault(section, {}).update(values)
            provenance.update({f"{section}.{key}": layer.label for key in values})
    try:
        config = RunConfig.model_validate(merged)
    except ValidationError as error:
        raise UserError(_describe_validation_error(error, provenance)) from None
    return ResolvedConfig(config=config, profile=profile, provenance=provenance)


def config_as_yaml(resolved: ResolvedConfig, with_provenance: bool = True) -> str:
    """The resolved config as YAML; each value commented with the layer it came from."""
    lines: list[str] = []
    for section, values in resolved.config.model_dump(mode="json").items():
        lines.append(f"{section}:")
        for key, value in values.items():
            rendered = yaml.safe_dump({key: value}, default_flow_style=True, width=1_000).strip()[1:-1]
            comment = f"  # {resolved.source_of(f'{section}.{key}')}" if with_provenance else ""
            lines.append(f"  {rendered}{comment}")
    return "\n".join(lines) + "\n"


def _sections_from_file(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        raise UserError(f"config file {path} not found: check the path")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read config file {path}: {error}") from None
    return _sections_from_text(text, str(path))


def _sections_from_text(text: str, source: str) -> dict[str, dict[str, Any]]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise UserError(f"{source}:{where}: cannot parse YAML ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping of sections (model:, optim:, ...) or old flat keys")
    return _to_sections(data, source)


def _to_sections(data: dict[str, Any], source: str) -> dict[str, dict[str, Any]]:
    """Sectioned YAML passes through; a flat old-style file is mapped through the legacy table."""
    keys = [str(key) for key in data]
    if not any(key in SECTION_NAMES for key in keys):
        for key in keys:
            if not is_legacy_key(key):
                raise UserError(f"{source}: unknown key '{key}'{_suggest_key(key)}")
        return legacy_to_sections(data)
    for key in keys:
        if key not in SECTION_NAMES:
            if is_legacy_key(key):
                raise UserError(
                    f"{source}: '{key}' is an old flat key in a sectioned file: write it as {LEGACY_KEYS[key]}"
                )
            raise UserError(f"{source}: unknown key '{key}'{_suggest_key(key)}")
        if not isinstance(data[key], dict):
            raise UserError(f"{source}: section '{key}' must be a mapping of keys to values")
    sections = {str(section): dict(values) for section, values in data.items()}
    _check_keys(sections, source)
    return sections


def _check_keys(sections: dict[str, dict[str, Any]], source: str) -> None:
    for section, values in sections.items():
        if section not in SECTION_NAMES:
            raise UserError(f"{source}: unknown section '{section}'{_suggest_key(section)}")
        valid = _section_model(section).model_fields
        for key in values:
            if key not in valid:
                raise UserError(f"{source}: unknown key '{section}.{key}'{_suggest_key(str(key), section)}")


def _section_model(section: str) -> type[BaseModel]:
    return RunConfig.model_fields[section].annotation  # type: ignore[return-value]


def _all_dotted_keys() -> list[str]:
    return [f"{section}.{key}" for section in SECTION_NAMES for key in _section_model(section).model_fields]


def _suggest_key(key: str, section: Optional[str] = None) -> str:
    """' (did you mean ...?)' for the closest valid key, searching the section first, then everywhere."""
    if section is not None:
        hint = _closest(key, list(_section_model(section).model_fields))
        if hint:
            return f" (did you mean '{section}.{hint}'?)"
    by_leaf = {dotted.split(".")[1]: dotted for dotted in _all_dotted_keys()}
    if key in by_leaf:
        return f" (did you mean '{by_leaf[key]}'?)"
    hint = _closest(key, list(by_leaf) + list(SECTION_NAMES))
    if hint:
        return f" (did you mean '{by_leaf.get(hint, hint)}'?)"
    return ""


def _closest(word: str, candidates: list[str]) -> Optional[str]:
    matches = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return matches[0] if matches else None


def _describe_validation_error(error: ValidationError, provenance: dict[str, str]) -> str:
    first = error.errors()[0]
    location = [str(part) for part in first["loc"]]
    dotted = ".".join(location[:2])
    message = first["msg"].removeprefix("Value error, ")
    source = provenance.get(dotted)
    if source is None and len(location) == 1:
        # Model-level rules (n_embd % n_head) name the section only: blame whoever set its keys.
        source = next((label for key, label in provenance.items() if key.startswith(f"{location[0]}.")), BASE_LABEL)
    return f"{source or BASE_LABEL}: {dotted}: {message}"
