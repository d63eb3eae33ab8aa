"""Damaged or hostile checkpoints and run names: one line, exit 2, nothing written where it should not be.

Each file here passes torch's safe load but breaks a rule of ours (a missing step, no optimizer state,
a model_args key this version does not know, a run name that climbs out of runs/).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from typer.testing import CliRunner

from hellogpt.cli import app
from tests.cli.test_train import sets
from tests.train.conftest import shakespeare_text, write_char_dataset


def invoke(*arguments: str):
    return CliRunner().invoke(app, list(arguments))


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with data/tiny and checkpoints/tiny.pt from a real 8-step run."""
    folder = tmp_path_factory.mktemp("trained")
    write_char_dataset(folder / "data" / "tiny", shakespeare_text())
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        result = invoke("train", "--data", "data/tiny", "--checkpoint", "tiny.pt", "--plain", *sets())
    assert result.exit_code == 0, result.output
    return folder


@pytest.fixture
def workdir(trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, content in files_under(trained).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def edit_checkpoint(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, path)


MALFORMED = {
    "missing-step": (lambda payload: payload.pop("step"), "training state"),
    "no-optimizer": (lambda payload: payload.update(optimizer=None), "training state"),
    "step-is-text": (lambda payload: payload.update(step="eight"), "damaged checkpoint: step is a str"),
    "unknown-model-arg": (lambda payload: payload["model_args"].update(rotary=True), "keys this hellogpt does not know (rotary)"),
    "model-not-tensors": (lambda payload: payload.update(model={"w": [1, 2]}), "damaged checkpoint: model entries w"),
}


@pytest.mark.parametrize("damage", list(MALFORMED), ids=list(MALFORMED))
def test_resume_of_a_malformed_checkpoint_is_one_line(damage: str, workdir: Path) -> None:
    change, expected = MALFORMED[damage]
    edit_checkpoint(workdir / "checkpoints" / "tiny.pt", change)
    before = files_under(workdir)
    result = invoke("train", "--data", "data/tiny", "--checkpoint", "tiny.pt", "--resume", "--plain", *sets("train.max_iters=12"))
    assert_one_line_error(result, expected)
    assert files_under(workdir) == before


@pytest.mark.parametrize("damage", ["step-is-text", "unknown-model-arg", "model-not-tensors"])
@pytest.mark.parametrize("command", ["chat", "export", "info"])
def test_chat_export_and_info_of_a_malformed_checkpoint_are_one_line(damage: str, command: str, workdir: Path) -> None:
    change, expected = MALFORMED[damage]
    edit_checkpoint(workdir / "checkpoints" / "tiny.pt", change)
    before = files_under(workdir)
    arguments = {
        "chat": ["chat", "--checkpoint", "tiny", "--prompt", "a"],
        "export": ["export", "tiny", "exported"],
        "info": ["info", "checkpoints/tiny.pt"],
    }[command]
    assert_one_line_error(invoke(*arguments), expected)
    assert files_under(workdir) == before


@pytest.mark.parametrize("run_name", ["../escaped", "a/b", "..", "/tmp/abs"])
def test_a_checkpoint_whose_run_name_leaves_runs_dir_is_refused(run_name: str, workdir: Path) -> None:
    edit_checkpoint(workdir / "checkpoints" / "tiny.pt", lambda payload: payload.update(run_name=run_name))
    before = files_under(workdir.parent)
    result = invoke("train", "--data", "data/tiny", "--checkpoint", "tiny.pt", "--resume", "--plain", *sets("train.max_iters=12"))
    assert_one_line_error(result, "is not a plain folder name")
    assert files_under(workdir.parent) == before


@pytest.mark.parametrize("name", ["../out", "a/b", ".hidden", ""])
def test_a_name_that_is_not_a_plain_folder_name_is_refused(name: str, workdir: Path) -> None:
    before = files_under(workdir)
    result = invoke("train", "--data", "data/tiny", "--name", name, "--plain", *sets())
    assert_one_line_error(result, "is not a plain name")
    assert files_under(workdir) == before


def test_a_name_names_the_checkpoint_too(workdir: Path) -> None:
    first = invoke("train", "--data", "data/tiny", "--name", "first", "--plain", *sets("train.max_iters=2"))
    second = invoke("train", "--data", "data/tiny", "--name", "second", "--plain", *sets("train.max_iters=2"))
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert (workdir / "checkpoints" / "first.pt").is_file() and (workdir / "checkpoints" / "second.pt").is_file()
    assert (workdir / "runs" / "first").is_dir() and (workdir / "runs" / "second").is_dir()


def test_a_validation_split_shorter_than_one_window_stops_before_the_first_step(workdir: Path) -> None:
    val = workdir / "data" / "tiny" / "val.bin"
    val.write_bytes(val.read_bytes()[:40])
    before = files_under(workdir)
    result = invoke("train", "--data", "data/tiny", "--checkpoint", "fresh.pt", "--plain", *sets())
    assert_one_line_error(result, "the val split of data/tiny has 20 tokens, fewer than block_size + 1 = 33")
    assert files_under(workdir) == before
