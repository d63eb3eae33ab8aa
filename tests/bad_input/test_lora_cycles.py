"""LoRA checkpoints whose bases lead back to themselves: one line naming the cycle, never a RecursionError."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.bad_input.test_checkpoints import (  # noqa: F401
    assert_one_line_error,
    edit_checkpoint,
    files_under,
    invoke,
    trained,
    workdir,
)
from tests.bad_input.test_lora_input import lora_tune


def name_as_base(lora: Path, base: Path) -> None:
    edit_checkpoint(lora, lambda payload: payload["base"].update(source=str(base.resolve())))


@pytest.fixture(scope="module")
def tuned(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder like `trained` plus checkpoints/tiny_lora.pt: real adapters tuned on checkpoints/tiny.pt."""
    folder = tmp_path_factory.mktemp("tuned")
    shutil.copytree(trained, folder, dirs_exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        result = lora_tune()
    assert result.exit_code == 0, result.output
    return folder


@pytest.fixture
def tuned_lora(tuned: Path, workdir: Path) -> Path:
    """This test's copy of the tuned LoRA checkpoint, in its working folder."""
    shutil.copyfile(tuned / "checkpoints" / "tiny_lora.pt", workdir / "checkpoints" / "tiny_lora.pt")
    return workdir / "checkpoints" / "tiny_lora.pt"


@pytest.fixture
def self_based(tuned_lora: Path) -> tuple[Path, str]:
    name_as_base(tuned_lora, tuned_lora)
    return tuned_lora, f"{tuned_lora.resolve()} -> {tuned_lora.resolve()}"


@pytest.fixture
def mutually_based(tuned_lora: Path) -> tuple[Path, str]:
    other = tuned_lora.with_name("other_lora.pt")
    shutil.copyfile(tuned_lora, other)
    name_as_base(tuned_lora, other)
    name_as_base(other, tuned_lora)
    return tuned_lora, f"{other.resolve()} -> {tuned_lora.resolve()} -> {other.resolve()}"


COMMANDS = {
    "chat": ("chat", "-k", "checkpoints/tiny_lora.pt", "--prompt", "To be"),
    "eval": ("eval", "checkpoints/tiny_lora.pt", "--data", "data/tiny"),
    "export": ("export", "checkpoints/tiny_lora.pt", "exported"),
    "resume": ("tune", "--from", "tiny.pt", "--data", "data/tiny", "--lora", "--resume", "--checkpoint", "tiny_lora.pt"),
}


@pytest.mark.parametrize("cycle", ["self_based", "mutually_based"])
@pytest.mark.parametrize("command", list(COMMANDS), ids=list(COMMANDS))
def test_a_cycle_of_lora_bases_is_one_line_naming_it(
    command: str, cycle: str, request: pytest.FixtureRequest, workdir: Path
) -> None:
    _, expected_cycle = request.getfixturevalue(cycle)
    before = files_under(workdir)
    assert_one_line_error(invoke(*COMMANDS[command]), "the LoRA bases form a cycle", expected_cycle)
    assert files_under(workdir) == before
