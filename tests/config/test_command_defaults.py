"""Defaults a command lays under the profile live as YAML beside the profiles, not as dicts in code."""

from __future__ import annotations

from hellogpt.config.layers import builtin_profile_names, load_command_defaults, resolve_config
from hellogpt.train.tune import tune_defaults


def test_tune_defaults_are_valid_config_and_not_offered_as_profiles() -> None:
    for name in ("tune", "tune-lora"):
        layer = load_command_defaults(name, "tune defaults")
        assert layer.values
        assert name not in builtin_profile_names()


def test_a_lora_tune_takes_the_lora_rates_over_the_tune_defaults() -> None:
    full, lora = tune_defaults(False).values, tune_defaults(True).values
    assert lora["optim"]["learning_rate"] > full["optim"]["learning_rate"]
    assert lora["train"] == full["train"]


def test_the_profile_and_set_still_win_over_the_tune_defaults() -> None:
    resolved = resolve_config("poems", [], ["optim.learning_rate=0.001"], defaults=tune_defaults(False))
    assert resolved.config.optim.learning_rate == 0.001
    assert resolved.source_of("train.always_save_checkpoint") in {"tune defaults", "profile poems"}
