"""GPTConfig states a shape; the defaults of a model are the config schema's, and only there."""

from __future__ import annotations

import dataclasses
import typing

import pydantic
import pytest

from hellogpt.checkpoints.format import gpt_config_from_args
from hellogpt.config.schema import ModelConfig
from hellogpt.errors import UserError
from hellogpt.model.architectures import ARCHITECTURES
from hellogpt.model.gpt import GPT2_SMALL, GPTConfig


def test_every_architecture_value_is_a_key_of_the_schema_and_takes_no_default_of_its_own() -> None:
    for field in dataclasses.fields(GPTConfig):
        assert field.name in ModelConfig.model_fields
        assert field.default is dataclasses.MISSING, f"GPTConfig.{field.name} has a default; the schema owns it"


def test_stored_model_args_lacking_keys_still_load_as_gpt2_small() -> None:
    stored = {"n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 8, "vocab_size": 11}
    config = gpt_config_from_args(stored)
    assert config == dataclasses.replace(GPT2_SMALL, **stored)


def test_stored_model_args_keep_every_value_they_have() -> None:
    stored = {
        "n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 8, "vocab_size": 11, "dropout": 0.1, "bias": False,
        "arch": "qwen3",
    }
    assert gpt_config_from_args(stored).to_dict() == stored


def test_stored_model_args_without_an_architecture_are_gpt2() -> None:
    stored = {"n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 8, "vocab_size": 11, "dropout": 0.1, "bias": False}
    assert gpt_config_from_args(stored).arch == "gpt2"


def test_an_unknown_stored_architecture_is_one_line_asking_for_an_upgrade() -> None:
    with pytest.raises(UserError, match="'llama3' is not one this hellogpt knows.*upgrade"):
        gpt_config_from_args({**GPT2_SMALL.to_dict(), "arch": "llama3"})


def test_the_schema_names_exactly_the_architectures_the_model_package_builds() -> None:
    assert set(typing.get_args(ModelConfig.model_fields["arch"].annotation)) == set(ARCHITECTURES)


def test_arch_llama3_is_refused_by_the_schema_in_one_message() -> None:
    with pytest.raises(pydantic.ValidationError, match="'gpt2' or 'qwen3'"):
        ModelConfig(arch="llama3")


def test_qwen3_with_biases_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match="qwen3 has no biases"):
        ModelConfig(arch="qwen3", bias=True)


def test_a_model_built_in_code_must_state_its_shape() -> None:
    with pytest.raises(TypeError):
        GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=11)  # type: ignore[call-arg]
