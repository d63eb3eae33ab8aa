"""Checkpoint files: what is saved comes back under a weights-only load, writes are atomic, bad files are one line."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from hellogpt.checkpoints import format as checkpoint_format
from hellogpt.checkpoints.format import load_checkpoint, save_checkpoint
from hellogpt.checkpoints.loading import model_from_checkpoint, tokenizer_from_checkpoint
from hellogpt.checkpoints.paths import resolve_checkpoint_path
from hellogpt.errors import UserError
from hellogpt.model.gpt import GPT
from tests.checkpoints.conftest import CHARS, TINY, tiny_checkpoint, tiny_payload


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


def test_tokenizer_comes_back_from_its_description() -> None:
    tokenizer = tokenizer_from_checkpoint(tiny_checkpoint())
    assert tokenizer.decode(tokenizer.encode("jab\n")) == "jab\n"
    assert tokenizer.vocab_size == len(CHARS)


