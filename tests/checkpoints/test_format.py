"""Checkpoint files: what is saved comes back under a weights-only load, writes are atomic, bad files are one line."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hellogpt.checkpoints import format as checkpoint_format
from hellogpt.checkpoints.format import Checkpoint, load_checkpoint, save_checkpoint
from hellogpt.checkpoints.loading import model_from_checkpoint, tokenizer_from_checkpoint
from hellogpt.checkpoints.paths import resolve_checkpoint_path
from hellogpt.cli import app
from hellogpt.cli.checkpoint_info import describe_checkpoint
from hellogpt.config.schema import RunConfig
from hellogpt.errors import UserError
from hellogpt.model.gpt import GPT, GPTConfig
from hellogpt.train.rng_state import capture_rng_state, generator_from_state, generator_state, restore_rng_state

TINY = GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=11, dropout=0.0, bias=False)
CHARS = "abcdefghij\n"


def tiny_payload(model: GPT | None = None) -> dict[str, Any]:
    """A payload as the training loop writes it, after one real optimizer step (so Adam has state)."""
    torch.manual_seed(0)
    model = model or GPT(TINY)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    idx = torch.randint(0, TINY.vocab_size, (2, TINY.block_size))
    model(idx, idx)[1].backward()
    optimizer.step()
    return {
        "model_args": TINY.to_dict(),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": None,
        "step": 1,
        "train_loss": 2.5,
        "val_loss": 2.6,
        "best_val_loss": 2.6,
        "config": RunConfig().model_dump(mode="json"),
        "tokenizer": {"kind": "char", "chars": CHARS},
        "rng": capture_rng_state(),
        "sampler": {"kind": "numpy", "world_size": 1, "states": [generator_state(np.random.default_rng(7))]},
        "origin": {"kind": "checkpoint", "path": "checkpoints/base.pt", "step": 100},
        "run_name": "tiny-run",
    }


def tiny_checkpoint(model: GPT | None = None) -> Checkpoint:
    return Checkpoint.from_payload({**tiny_payload(model), "format_version": 1}, Path("tiny.pt"))


def run_info(*args: str) -> Any:
    return CliRunner().invoke(app, ["info", *args])


def test_round_trip_restores_identical_weights_and_logits(tmp_path: Path) -> None:
    model = GPT(TINY)
    save_checkpoint(tmp_path / "tiny.pt", tiny_checkpoint(model))
    restored = model_from_checkpoint(load_checkpoint(tmp_path / "tiny.pt"))
    idx = torch.randint(0, TINY.vocab_size, (1, TINY.block_size))
    model.eval()
    assert torch.equal(model(idx)[0], restored(idx)[0])
    assert restored.lm_head.weight is restored.transformer.wte.weight


def test_round_trip_keeps_every_payload_key_under_weights_only(tmp_path: Path) -> None:
    payload = tiny_payload()
    save_checkpoint(tmp_path / "tiny.pt", tiny_checkpoint())
    loaded = torch.load(tmp_path / "tiny.pt", weights_only=True)
    assert set(payload) | {"format_version", "hellogpt_version", "rank_rngs", "pending_eval"} == set(loaded)
    assert loaded["format_version"] == 1
    for key in ("step", "train_loss", "val_loss", "best_val_loss", "config", "tokenizer", "origin", "run_name", "sampler"):
        assert loaded[key] == payload[key], key
    optimizer = torch.optim.AdamW(GPT(TINY).parameters(), lr=1e-3)
    optimizer.load_state_dict(loaded["optimizer"])
    assert optimizer.state_dict()["state"][0]["step"] == 1


def test_compiled_and_ddp_prefixes_are_stripped(tmp_path: Path) -> None:
    tiny = tiny_checkpoint()
    wrapped = dataclasses.replace(tiny, model={f"module._orig_mod.{name}": tensor for name, tensor in tiny.model.items()})
    save_checkpoint(tmp_path / "wrapped.pt", wrapped)
    restored = model_from_checkpoint(load_checkpoint(tmp_path / "wrapped.pt"))
    assert torch.equal(restored.transformer.wte.weight, tiny.model["transformer.wte.weight"])


def test_failed_save_leaves_the_old_file_and_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "tiny.pt"
    save_checkpoint(target, tiny_checkpoint())
    before = target.read_bytes()

    def crash_midway(obj: Any, file: Any) -> None:
        file.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_format.torch, "save", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(target, tiny_checkpoint())
    assert target.read_bytes() == before
    assert [path.name for path in tmp_path.iterdir()] == ["tiny.pt"]


def test_saving_a_numpy_array_fails_at_save_time(tmp_path: Path) -> None:
    with_array = dataclasses.replace(tiny_checkpoint(), sampler={"key": np.arange(3)})
    with pytest.raises(TypeError, match=r"payload\['sampler'\]\['key'\] is a ndarray"):
        save_checkpoint(tmp_path / "tiny.pt", with_array)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("make_file", "expected"),
    [
        (lambda path, good: path.write_bytes(good.read_bytes()[:2000]), r"not a readable checkpoint \(truncated or corrupt\)"),
        (lambda path, good: path.write_bytes(random.Random(0).randbytes(4096)), "not a readable checkpoint"),
        (lambda path, good: torch.save({"weight": torch.zeros(3)}, path), "was not written by hellogpt"),
        (lambda path, good: torch.save({"array": np.zeros(3)}, path), "was not written by hellogpt"),
    ],
    ids=["truncated", "random-bytes", "plain-state-dict", "pickled-numpy"],
)
def test_unreadable_files_are_one_line_user_errors(tmp_path: Path, make_file: Any, expected: str) -> None:
    good = tmp_path / "good.pt"
    save_checkpoint(good, tiny_checkpoint())
    bad = tmp_path / "bad.pt"
    make_file(bad, good)
    with pytest.raises(UserError, match=expected) as raised:
        load_checkpoint(bad)
    assert "\n" not in str(raised.value) and str(bad) in str(raised.value)


def test_a_newer_format_asks_for_an_upgrade(tmp_path: Path) -> None:
    torch.save({**tiny_payload(), "format_version": 99, "hellogpt_version": "9.0"}, tmp_path / "future.pt")
    with pytest.raises(UserError, match=r"format 99 \(written by hellogpt 9.0\).*pip install -U hellogpt"):
        load_checkpoint(tmp_path / "future.pt")


def test_a_missing_checkpoint_names_where_it_looked_and_what_is_there(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "checkpoints" / "poe.pt", tiny_checkpoint())
    with pytest.raises(UserError, match=r"no checkpoint at .*poems\.pt; .*checkpoints/ has: poe\.pt$"):
        load_checkpoint(resolve_checkpoint_path("poems", tmp_path / "checkpoints"))


def test_weights_that_do_not_fit_the_architecture_are_a_user_error(tmp_path: Path) -> None:
    misfit = dataclasses.replace(tiny_checkpoint(), model_args=dataclasses.replace(TINY, n_layer=3, vocab_size=12))
    with pytest.raises(UserError, match=r"do not fit its architecture \(n_layer=3.*missing: transformer\.h\.2.*wrong shape"):
        model_from_checkpoint(misfit)


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("poe", "checkpoints/poe.pt"),
        ("poe.pt", "checkpoints/poe.pt"),
        ("runs/poe", "runs/poe"),
        ("./poe.pt", "poe.pt"),
    ],
)
def test_bare_names_resolve_under_checkpoints_and_paths_are_kept(argument: str, expected: str) -> None:
    assert resolve_checkpoint_path(argument) == Path(expected)


def test_an_existing_file_in_the_current_folder_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "local.pt").write_bytes(b"")
    assert resolve_checkpoint_path("local.pt") == Path("local.pt")


def test_restoring_rng_state_repeats_the_same_draws(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's legacy state
    save_checkpoint(tmp_path / "rng.pt", dataclasses.replace(tiny_checkpoint(), rng=capture_rng_state()))
    first = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist())
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt").rng or {})
    assert (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist()) == first


def test_sampler_generator_continues_after_a_round_trip(tmp_path: Path) -> None:
    generator = np.random.default_rng(5)
    generator.integers(0, 100, 10)
    sampler = {"kind": "numpy", "world_size": 1, "states": [generator_state(generator)]}
    save_checkpoint(tmp_path / "s.pt", dataclasses.replace(tiny_checkpoint(), sampler=sampler))
    resumed = generator_from_state((load_checkpoint(tmp_path / "s.pt").sampler or {})["states"][0])
    assert resumed.integers(0, 1000, 5).tolist() == generator.integers(0, 1000, 5).tolist()


def test_tokenizer_comes_back_from_its_description() -> None:
    tokenizer = tokenizer_from_checkpoint(tiny_checkpoint())
    assert tokenizer.decode(tokenizer.encode("jab\n")) == "jab\n"
    assert tokenizer.vocab_size == len(CHARS)


def test_describe_reports_progress_shape_tokenizer_and_origin(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "tiny.pt", tiny_checkpoint())
    described = describe_checkpoint(tmp_path / "tiny.pt")
    assert described["step"] == 1 and described["best_val_loss"] == 2.6
    assert described["n_params"] == GPT(TINY).num_parameters()
    assert described["architecture"] == TINY.to_dict()
    assert described["tokenizer"] == {"kind": "char", "vocab_size": len(CHARS)}
    assert described["origin"]["kind"] == "checkpoint"
    assert described["size_bytes"] == (tmp_path / "tiny.pt").stat().st_size


def test_info_json_prints_the_checkpoint_as_one_object(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "tiny.pt", tiny_checkpoint())
    result = run_info(str(tmp_path / "tiny.pt"), "--json")
    assert result.exit_code == 0, result.output
    described = json.loads(result.output)
    assert (described["step"], described["train_loss"], described["val_loss"]) == (1, 2.5, 2.6)
    assert described["config"]["train"]["batch_size"] == RunConfig().train.batch_size


def test_info_on_a_corrupt_file_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    result = run_info(str(bad))
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert result.output.strip().count("\n") == 0 and "not a readable checkpoint" in result.output
