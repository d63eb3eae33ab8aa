"""LoRA mistakes through the CLI: one line naming the thing and the fix, exit 2, nothing half-written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bad_input.test_checkpoints import assert_one_line_error, files_under, invoke, trained, workdir  # noqa: F401
from tests.cli.test_train import sets

TUNE = ("tune", "--from", "tiny.pt", "--data", "data/tiny", "--plain", "--lora")


def lora_tune(*overrides: str):
    return invoke(*TUNE, "--checkpoint", "tiny_lora.pt", *sets("train.max_iters=2", "train.eval_interval=2", *overrides))


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("lora.rank=0", "lora.rank: rank 0 adapts nothing: use a rank of at least 1"),
        ("lora.targets=attn.q_proj", "lora.targets: unknown target 'attn.q_proj': use any of attn.c_attn"),
        ("lora.alpha=-1", "lora.alpha"),
    ],
    ids=["rank-0", "unknown-target", "negative-alpha"],
)
def test_a_bad_lora_setting_is_one_line_and_writes_nothing(setting: str, expected: str, workdir: Path) -> None:
    before = files_under(workdir)
    assert_one_line_error(lora_tune(setting), expected)
    assert files_under(workdir) == before


def test_lora_from_scratch_is_one_line(workdir: Path) -> None:
    result = invoke("train", "--data", "data/tiny", "--checkpoint", "new.pt", "--plain", *sets("lora.enabled=true"))
    assert_one_line_error(result, "starts from scratch", "hellogpt tune --from MODEL --lora")
    assert not (workdir / "checkpoints" / "new.pt").exists()


@pytest.fixture
def lora_without_base(workdir: Path) -> Path:
    """A LoRA tune of checkpoints/tiny.pt, whose base is then moved away."""
    result = lora_tune()
    assert result.exit_code == 0, result.output
    (workdir / "checkpoints" / "tiny.pt").rename(workdir / "moved.pt")
    return workdir / "checkpoints" / "tiny_lora.pt"


@pytest.mark.parametrize(
    "command",
    [
        ("chat", "-k", "checkpoints/tiny_lora.pt", "--prompt", "To be"),
        ("eval", "checkpoints/tiny_lora.pt", "--data", "data/tiny"),
        ("export", "checkpoints/tiny_lora.pt", "exported"),
        ("tune", "--from", "tiny.pt", "--data", "data/tiny", "--lora", "--resume", "--checkpoint", "tiny_lora.pt"),
    ],
    ids=["chat", "eval", "export", "resume"],
)
def test_a_missing_base_is_one_line_naming_it(command: tuple[str, ...], lora_without_base: Path, workdir: Path) -> None:
    before = files_under(workdir)
    extra = sets("train.max_iters=4") if command[0] == "tune" else []
    result = invoke(*command, *extra)
    assert_one_line_error(result, f"the LoRA base {(workdir / 'checkpoints' / 'tiny.pt').resolve()} is missing", "put it back")
    assert files_under(workdir) == before


def test_a_changed_base_is_one_line_naming_it(workdir: Path) -> None:
    assert lora_tune().exit_code == 0
    retrained = invoke(
        "train", "--data", "data/tiny", "--checkpoint", "tiny.pt", "--plain", "--overwrite", *sets("train.seed=9")
    )
    assert retrained.exit_code == 0, retrained.output
    result = invoke("chat", "-k", "checkpoints/tiny_lora.pt", "--prompt", "To be")
    assert_one_line_error(result, "tiny.pt has changed since the adapters were tuned on it", "--lora")
