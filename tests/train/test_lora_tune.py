"""LoRA tunes through the loop: adapters learn, the base never changes, the checkpoint is small and exact to
resume, and it names its base with a hash that catches a missing or changed base."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import GPT2LMHeadModel

from hellogpt.checkpoints.format import load_checkpoint
from hellogpt.checkpoints.loading import model_from_checkpoint
from hellogpt.checkpoints.lora_base import merged_checkpoint
from hellogpt.data.loader import open_dataset
from hellogpt.errors import UserError
from hellogpt.evaluate import evaluate_model, window_starts
from hellogpt.export import export_checkpoint
from hellogpt.model.lora import ADAPTER_SUFFIXES, LoraSpec, add_adapters, load_adapter_state_dict
from hellogpt.train.events import RunFinished, StepEvent
from hellogpt.train.loop import train
from hellogpt.train.lora import frozen_dtype
from hellogpt.train.tune import load_tuning_source
from tests.train.conftest import events_of, shakespeare_text, tiny_config, write_char_dataset

LORA = ("lora.enabled=true", "lora.rank=4", "lora.dropout=0.1", "optim.learning_rate=1e-2", "optim.warmup_iters=0")


def run(resolved, data_dir: Path, checkpoint: Path, **options) -> list:
    return list(train(resolved, data_dir=data_dir, checkpoint_path=checkpoint, **options))


def lora_tune(base: Path, data_dir: Path, checkpoint: Path, *overrides: str, resume: bool = False) -> list:
    resolved = tiny_config(*LORA, *overrides)
    init = None if resume else load_tuning_source(str(base), base.parent, resolved.config)[0]
    return run(resolved, data_dir, checkpoint, init=init, resume=resume)


@pytest.fixture(scope="module")
def char_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_char_dataset(tmp_path_factory.mktemp("data") / "tiny", shakespeare_text())


@pytest.fixture(scope="module")
def base_checkpoint(char_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny char model trained for 30 steps: the base every LoRA tune here starts from."""
    path = tmp_path_factory.mktemp("base") / "base.pt"
    run(tiny_config("optim.learning_rate=1e-2", "train.max_iters=30", "optim.lr_decay_iters=30", "train.eval_interval=30"), char_data, path)
    return path


@pytest.fixture
def tuned(base_checkpoint: Path, char_data: Path, tmp_path: Path) -> tuple[Path, list]:
    events = lora_tune(
        base_checkpoint, char_data, tmp_path / "lora.pt", "train.max_iters=16", "optim.lr_decay_iters=16", "train.eval_interval=16"
    )
    return tmp_path / "lora.pt", events


def val_loss(checkpoint_path: Path, data_dir: Path) -> float:
    """The loss on the first 64 val windows, by `hellogpt eval`'s core (the same windows for every model)."""
    dataset = open_dataset(data_dir)
    model = model_from_checkpoint(load_checkpoint(checkpoint_path))
    starts = window_starts(dataset, "val", model.config.block_size, 64)
    device = torch.device("cpu")
    return evaluate_model(model, "", dataset.tokenizer, dataset, "val", starts, model.config.block_size, device, torch.float32).loss


def test_a_lora_tune_lowers_the_val_loss_of_a_trained_model(
    base_checkpoint: Path, char_data: Path, tuned: tuple[Path, list]
) -> None:
    path, events = tuned
    assert events[-1].reason == "completed"
    assert val_loss(path, char_data) < val_loss(base_checkpoint, char_data)


def test_a_lora_checkpoint_holds_only_adapters_and_a_hashed_reference_to_its_base(
    base_checkpoint: Path, tuned: tuple[Path, list]
) -> None:
    path, _ = tuned
    checkpoint = load_checkpoint(path)
    assert checkpoint.model and all(name.endswith(ADAPTER_SUFFIXES) for name in checkpoint.model)
    assert checkpoint.lora == {"rank": 4, "alpha": 16.0, "dropout": 0.1, "targets": list(LoraSpec(4, 16, 0, ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")).targets)}
    assert checkpoint.base["kind"] == "checkpoint" and checkpoint.base["source"] == str(base_checkpoint.resolve())
    assert len(checkpoint.base["sha256"]) == 64
    assert path.stat().st_size < base_checkpoint.stat().st_size / 2


def test_tuning_never_writes_to_its_base(base_checkpoint: Path, char_data: Path, tmp_path: Path) -> None:
    before = base_checkpoint.read_bytes()
    lora_tune(base_checkpoint, char_data, tmp_path / "lora.pt", "train.max_iters=2")
    full = tiny_config("train.max_iters=2")
    run(full, char_data, tmp_path / "full.pt", init=load_tuning_source(str(base_checkpoint), tmp_path, full.config)[0])
    assert base_checkpoint.read_bytes() == before


def test_the_merged_model_is_the_base_plus_the_saved_adapters(base_checkpoint: Path, tuned: tuple[Path, list]) -> None:
    path, _ = tuned
    checkpoint = load_checkpoint(path)
    by_hand = model_from_checkpoint(load_checkpoint(base_checkpoint))
    add_adapters(by_hand, LoraSpec.from_dict(checkpoint.lora))
    load_adapter_state_dict(by_hand, checkpoint.model)
    ids = torch.randint(0, checkpoint.model_args.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model_from_checkpoint(checkpoint)(ids)[0], by_hand.eval()(ids)[0], atol=1e-5, rtol=0)


def test_lora_resume_continues_the_same_loss_curve(base_checkpoint: Path, char_data: Path, tmp_path: Path) -> None:
    settings = ("train.eval_interval=4", "optim.lr_decay_iters=8")
    straight = lora_tune(base_checkpoint, char_data, tmp_path / "straight.pt", *settings, "train.max_iters=8")
    split = tmp_path / "split.pt"
    first_half = lora_tune(base_checkpoint, char_data, split, *settings, "train.max_iters=4")
    second_half = lora_tune(base_checkpoint, char_data, split, *settings, "train.max_iters=8", resume=True)
    assert [e.loss for e in events_of(StepEvent, first_half + second_half)] == [e.loss for e in events_of(StepEvent, straight)]
    resumed, uninterrupted = load_checkpoint(split).model, load_checkpoint(tmp_path / "straight.pt").model
    assert all(torch.equal(resumed[name], uninterrupted[name]) for name in uninterrupted)


def test_a_changed_base_is_one_error_naming_it(base_checkpoint: Path, char_data: Path, tmp_path: Path) -> None:
    base = tmp_path / "base.pt"
    base.write_bytes(base_checkpoint.read_bytes())
    lora_tune(base, char_data, tmp_path / "lora.pt", "train.max_iters=2")
    run(tiny_config("train.max_iters=2", "train.seed=5"), char_data, base)  # a different model at the same path
    with pytest.raises(UserError, match=f"the LoRA base {base.resolve()} has changed since the adapters were tuned"):
        model_from_checkpoint(load_checkpoint(tmp_path / "lora.pt"))
    with pytest.raises(UserError, match="has changed"):
        lora_tune(base, char_data, tmp_path / "lora.pt", "train.max_iters=4", resume=True)


def test_a_missing_base_is_one_error_naming_it(base_checkpoint: Path, char_data: Path, tmp_path: Path) -> None:
    base = tmp_path / "base.pt"
    base.write_bytes(base_checkpoint.read_bytes())
    lora_tune(base, char_data, tmp_path / "lora.pt", "train.max_iters=2")
    base.unlink()
    with pytest.raises(UserError, match=f"the LoRA base {base.resolve()} is missing .* put it back"):
        model_from_checkpoint(load_checkpoint(tmp_path / "lora.pt"))


def test_lora_needs_pretrained_weights(char_data: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="starts from scratch: use `hellogpt tune --from MODEL --lora`"):
        run(tiny_config(*LORA), char_data, tmp_path / "scratch.pt")


def test_resume_may_not_change_the_adapters_shape(base_checkpoint: Path, char_data: Path, tmp_path: Path) -> None:
    lora_tune(base_checkpoint, char_data, tmp_path / "lora.pt", "train.max_iters=2")
    with pytest.raises(UserError, match="rank 8 vs 4"):
        lora_tune(base_checkpoint, char_data, tmp_path / "lora.pt", "train.max_iters=4", "lora.rank=8", resume=True)


def test_export_of_a_lora_checkpoint_loads_in_transformers_with_the_merged_logits(
    tuned: tuple[Path, list], tmp_path: Path
) -> None:
    checkpoint = load_checkpoint(tuned[0])
    out_dir = export_checkpoint(merged_checkpoint(checkpoint).to_payload(), tmp_path / "exported")
    hf_model = GPT2LMHeadModel.from_pretrained(out_dir).eval()
    ids = torch.randint(0, checkpoint.model_args.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(hf_model(ids).logits, model_from_checkpoint(checkpoint)(ids)[0], atol=1e-5, rtol=0)


def test_the_frozen_base_is_held_in_bf16_where_the_run_computes_in_it(
    base_checkpoint: Path, char_data: Path, tmp_path: Path
) -> None:
    assert frozen_dtype(torch.bfloat16) == torch.bfloat16 and frozen_dtype(torch.float16) == torch.float16
    assert frozen_dtype(torch.float32) == torch.float32
    events = lora_tune(base_checkpoint, char_data, tmp_path / "bf16.pt", "train.max_iters=2", "system.dtype=bfloat16")
    assert isinstance(events[-1], RunFinished) and events[-1].reason == "completed"
    assert all(tensor.dtype == torch.float32 for tensor in load_checkpoint(tmp_path / "bf16.pt").model.values())


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_activation_checkpointing_gives_the_same_losses(
    lora: bool, base_checkpoint: Path, char_data: Path, tmp_path: Path
) -> None:
    settings = ("model.dropout=0.1", "train.max_iters=4")
    losses = []
    for recompute in ("false", "true"):
        option = f"train.activation_checkpointing={recompute}"
        if lora:
            events = lora_tune(base_checkpoint, char_data, tmp_path / f"{recompute}.pt", *settings, option)
        else:
            events = run(tiny_config(*settings, option), char_data, tmp_path / f"{recompute}.pt")
        losses.append([event.loss for event in events_of(StepEvent, events)])
    assert losses[0] == losses[1]
