"""The old Hello-GPT flat files load unchanged through --config, one test per seed file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hellogpt.config.layers import resolve_config
from hellogpt.config.legacy import LEGACY_KEYS
from hellogpt.config.schema import RunConfig


def as_seed_file(config: RunConfig, seed: RunConfig) -> RunConfig:
    """A profile with the documented departures from its seed file undone: `data.source` (the profiles
    name the shipped corpus to prepare their dataset from; the old tool had no such key and expected it
    prepared by hand), `train.eval_iters` (the profiles read the val split about once per evaluation,
    the old files up to ten times over) and the training recipe (from-scratch profiles train Qwen3's block
    with Muon at their own rates, benchmarks/README.md). Every other value must match."""
    recipe = ("name", "learning_rate", "muon_learning_rate", "embedding_learning_rate", "min_lr")
    return config.model_copy(
        update={
            "data": config.data.model_copy(update={"source": None}),
            "train": config.train.model_copy(update={"eval_iters": seed.train.eval_iters}),
            "model": config.model.model_copy(update={"arch": seed.model.arch}),
            "optim": config.optim.model_copy(update={key: getattr(seed.optim, key) for key in recipe}),
        }
    )


def test_legacy_table_maps_onto_real_schema_keys() -> None:
    for old_key, dotted in LEGACY_KEYS.items():
        section, key = dotted.split(".")
        assert key in RunConfig.model_fields[section].annotation.model_fields, old_key


def test_train_yaml_maps_every_key(seed_configs: Path) -> None:
    path = seed_configs / "train" / "train.yaml"
    flat = yaml.safe_load(path.read_text())
    assert set(flat) <= set(LEGACY_KEYS)
    resolved = resolve_config(config_files=[path])
    config = resolved.config
    assert config.train.out_dir == "checkpoints"
    assert config.train.checkpoint_name == "checkpoint.pt"
    assert (config.train.eval_interval, config.train.log_interval, config.train.eval_iters) == (2000, 1, 200)
    assert (config.train.gradient_accumulation_steps, config.train.batch_size) == (40, 12)
    assert (config.model.block_size, config.model.n_layer, config.model.n_head, config.model.n_embd) == (1024, 12, 12, 768)
    assert (config.model.dropout, config.model.bias, config.model.vocab_size) == (0.0, False, 50304)
    assert config.optim.learning_rate == 6e-4 and config.optim.beta2 == 0.95 and config.optim.min_lr == 6e-5
    assert config.system.device == "cuda"
    assert config.system.dtype == "float16"
    assert config.system.peak_flops == pytest.approx(10.87e12)
    assert resolved.source_of("system.peak_flops") == f"file {path}"


def test_model_run_yaml_sets_the_sampling_keys(seed_configs: Path) -> None:
    config = resolve_config(config_files=[seed_configs / "train" / "model_run.yaml"]).config
    assert (config.sample.max_new_tokens, config.sample.temperature, config.sample.top_k) == (200, 0.8, 256)


def test_edgar_poe_config_ext_matches_the_edgar_poe_profile(seed_configs: Path) -> None:
    path = seed_configs / "datasets" / "edgar_poe" / "config_ext.yaml"
    from_seed = resolve_config(config_files=[path]).config
    assert from_seed.data.dataset == "edgar_poe"
    assert from_seed.train.checkpoint_name == "edgar_poe.pt"
    assert (from_seed.train.batch_size, from_seed.model.block_size, from_seed.optim.beta2) == (16, 256, 0.99)
    profile = resolve_config("edgar_poe").config
    assert profile.data.source == "builtin:edgar_poe" and profile.train.eval_iters == 20
    assert from_seed == as_seed_file(profile, from_seed)


def test_poems_config_from_poe_matches_the_poems_profile(seed_configs: Path) -> None:
    path = seed_configs / "datasets" / "poems" / "config_from_poe.yaml"
    from_seed = resolve_config(config_files=[path]).config
    assert from_seed.train.checkpoint_name == "poems_from_poe.pt"
    assert from_seed.optim.learning_rate == 1e-5 and from_seed.train.max_iters == 2001
    profile = resolve_config("poems").config
    assert profile.data.source == "builtin:poems" and profile.train.eval_iters == 40
    assert from_seed == as_seed_file(profile, from_seed)


def test_poems_config_from_hug_matches_the_gpt2_tune_profile(seed_configs: Path) -> None:
    path = seed_configs / "datasets" / "poems" / "config_from_hug.yaml"
    from_seed = resolve_config(config_files=[path]).config
    # The file sets gradient_accumulation_steps twice; YAML keeps the last (32), as the old tool did.
    assert (from_seed.train.batch_size, from_seed.train.gradient_accumulation_steps) == (2, 32)
    assert from_seed.optim.decay_lr is False and from_seed.train.checkpoint_name == "poems_hugs.pt"
    profile = resolve_config("gpt2-tune").config
    assert profile.data.source == "builtin:poems" and profile.train.eval_iters == 20
    assert from_seed == as_seed_file(profile, from_seed)


def test_old_layering_order_is_kept(seed_configs: Path) -> None:
    """train.yaml then the dataset file, as the old tool merged them."""
    files = [seed_configs / "train" / "train.yaml", seed_configs / "datasets" / "edgar_poe" / "config_ext.yaml"]
    config = resolve_config(config_files=files).config
    assert config.model.n_embd == 384 and config.train.out_dir == "checkpoints" and config.system.dtype == "float16"


def test_unknown_flat_key_is_reported_with_a_suggestion(tmp_path: Path) -> None:
    from hellogpt.errors import UserError

    path = tmp_path / "old.yaml"
    path.write_text("learning_rate: 0.1\nbatch_sise: 4\n")
    with pytest.raises(UserError, match="unknown key 'batch_sise' \\(did you mean 'train.batch_size'\\?\\)"):
        resolve_config(config_files=[path])
