"""Config layering: base -> profile -> files -> --set, provenance, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from hellogpt.config.layers import builtin_profile_names, config_as_yaml, resolve_config
from hellogpt.config.schema import RunConfig
from hellogpt.errors import UserError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_base_alone_gives_the_schema_defaults() -> None:
    resolved = resolve_config()
    assert resolved.config == RunConfig()
    assert resolved.source_of("optim.learning_rate") == "base"
    assert resolved.config.system.device == "auto"


def test_each_layer_overrides_the_one_before(tmp_path: Path) -> None:
    first = write(tmp_path / "first.yaml", "optim:\n  learning_rate: 0.001\ntrain:\n  batch_size: 3\n")
    second = write(tmp_path / "second.yaml", "optim:\n  learning_rate: 0.002\n")
    resolved = resolve_config("edgar_poe", [first, second], ["train.batch_size=5"])
    config = resolved.config
    assert config.model.n_embd == 384  # profile over base
    assert config.optim.learning_rate == 0.002  # second file over first file over profile
    assert config.train.batch_size == 5  # --set over everything
    assert config.optim.weight_decay == 0.1  # untouched base value
    assert resolved.source_of("model.n_embd") == "profile edgar_poe"
    assert resolved.source_of("optim.learning_rate") == f"file {second}"
    assert resolved.source_of("train.batch_size") == "--set"
    assert resolved.source_of("optim.weight_decay") == "base"


def test_set_values_are_parsed_as_yaml_scalars() -> None:
    config = resolve_config(overrides=["optim.decay_lr=false", "optim.min_lr=1e-5", "sample.top_p=0.9"]).config
    assert config.optim.decay_lr is False
    assert config.optim.min_lr == pytest.approx(1e-5)
    assert config.sample.top_p == 0.9


def test_set_accepts_an_old_flat_key() -> None:
    config = resolve_config(overrides=["learning_rate=0.01"]).config
    assert config.optim.learning_rate == 0.01


def test_every_builtin_profile_resolves() -> None:
    names = builtin_profile_names()
    assert {"base", "quickstart", "edgar_poe", "poems", "gpt2-tune", "shakespeare_char"} <= set(names)
    for name in names:
        resolve_config(name)


def test_shakespeare_char_profile_matches_nanogpt() -> None:
    config = resolve_config("shakespeare_char").config
    assert (config.model.n_layer, config.model.n_head, config.model.n_embd) == (6, 6, 384)
    assert (config.model.block_size, config.model.dropout, config.data.tokenizer) == (256, 0.2, "char")


def test_auto_device_is_the_default_everywhere() -> None:
    for name in builtin_profile_names():
        assert resolve_config(name).config.system.device == "auto"


def test_info_yaml_names_the_layer_of_every_value() -> None:
    text = config_as_yaml(resolve_config("quickstart", overrides=["train.seed=7"]))
    assert "  seed: 7  # --set" in text
    assert "  n_layer: 4  # profile quickstart" in text
    assert "  weight_decay: 0.1  # base" in text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("optim:\n  learing_rate: 0.1\n", "unknown key 'optim.learing_rate' (did you mean 'optim.learning_rate'?)"),
        ("optim:\n  batch_size: 4\n", "unknown key 'optim.batch_size' (did you mean 'train.batch_size'?)"),
        ("modle:\n  n_layer: 2\n", "unknown key 'modle' (did you mean 'model'?)"),
        ("model:\n  n_layer: two\n", "model.n_layer: Input should be a valid integer"),
        ("model:\n  n_layer: 0\n", "model.n_layer: Input should be greater than 0"),
        ("model:\n  n_embd: 100\n  n_head: 3\n", "model: n_embd (100) must be divisible by n_head (3)"),
        ("sample:\n  top_p: 1.5\n", "sample.top_p: Input should be less than or equal to 1"),
        ("system:\n  device: tpu\n", "system.device: 'tpu' is not a device"),
        ("system:\n  dtype: float8\n", "system.dtype: Input should be 'auto', 'float32', 'bfloat16' or 'float16'"),
        ("model: [1, 2\n", "cannot parse YAML"),
        ("- 1\n- 2\n", "expected a mapping of sections"),
        ("n_layer: 2\nmodel:\n  n_head: 2\n", "'n_layer' is an old flat key in a sectioned file: write it as model.n_layer"),
    ],
)
def test_bad_config_file_names_the_file_the_key_and_the_reason(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(UserError) as caught:
        resolve_config(config_files=[path])
    message = str(caught.value)
    assert expected in message
    assert str(path) in message
    assert "\n" not in message


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="config file .*nope.yaml not found"):
        resolve_config(config_files=[tmp_path / "nope.yaml"])


def test_unknown_profile_suggests_the_closest() -> None:
    with pytest.raises(UserError, match="unknown profile 'quickstrat' \\(did you mean 'quickstart'\\?\\)"):
        resolve_config("quickstrat")


def test_profile_can_be_a_yaml_path(tmp_path: Path) -> None:
    path = write(tmp_path / "mine.yaml", "model:\n  n_layer: 3\n")
    resolved = resolve_config(str(path))
    assert resolved.config.model.n_layer == 3
    assert resolved.source_of("model.n_layer") == f"profile {path}"


@pytest.mark.parametrize("assignment", ["optim.learning_rate", "=3", "nonsense=1", "optim.lr=1"])
def test_malformed_set_is_a_user_error(assignment: str) -> None:
    with pytest.raises(UserError, match="--set"):
        resolve_config(overrides=[assignment])


def test_checkpoint_name_gets_its_pt_suffix() -> None:
    assert resolve_config(overrides=["train.checkpoint_name=poems"]).config.train.checkpoint_name == "poems.pt"


def test_measure_off_in_yaml_means_off_not_false(tmp_path: Path) -> None:
    """YAML reads a bare `off` as false: `system.measure: off` must still switch the probes off."""
    path = tmp_path / "quiet.yaml"
    path.write_text("system:\n  measure: off\n")
    assert resolve_config(None, [path]).config.system.measure == "off"
    assert resolve_config(overrides=["system.measure=off"]).config.system.measure == "off"
    assert RunConfig().system.measure == "auto"
