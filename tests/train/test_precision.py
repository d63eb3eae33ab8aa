"""The dtype a run computes in: decided once by the fixed rule, recorded in the checkpoint, reused by --resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hellogpt.checkpoints.format import load_checkpoint
from hellogpt.cli import app
from hellogpt.hardware import devices
from tests.train.conftest import TINY_SETTINGS, shakespeare_text, write_char_dataset

# Wide enough that the rule picks bf16 on a CPU with native bf16 (devices.CPU_BF16_MIN_WIDTH), small enough to be quick.
WIDE_SETTINGS = [
    *TINY_SETTINGS,
    "model.n_layer=1",
    "model.n_head=4",
    f"model.n_embd={devices.CPU_BF16_MIN_WIDTH}",
    "train.gradient_accumulation_steps=1",
    "train.max_iters=2",
    "train.eval_interval=2",
    "system.dtype=auto",
]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    write_char_dataset(tmp_path / "data" / "tiny", shakespeare_text(20_000))
    return tmp_path


def train(*extra: str, resume: bool = False):
    assignments = [*WIDE_SETTINGS, *extra]
    arguments = ["train", "--data", "data/tiny", "--checkpoint", "wide.pt", "--plain"]
    arguments += ["--resume"] if resume else []
    return CliRunner().invoke(app, [*arguments, *[part for item in assignments for part in ("--set", item)]])


def native_bf16(monkeypatch: pytest.MonkeyPatch, present: bool) -> None:
    """The hardware fact the rule reads, as if the CPU had (or lacked) AVX512-BF16/AMX."""
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: present)


def test_resume_keeps_the_recorded_dtype_when_the_rule_would_now_choose_another(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    native_bf16(monkeypatch, False)
    first = train()
    assert first.exit_code == 0, first.output
    checkpoint = workdir / "checkpoints" / "wide.pt"
    assert load_checkpoint(checkpoint).dtype == "float32"
    native_bf16(monkeypatch, True)  # the rule would now pick bf16 for this width
    assert devices.choose_dtype("auto", "cpu", load_checkpoint(checkpoint).model_args) == torch.bfloat16
    resumed = train("train.max_iters=4", resume=True)
    assert resumed.exit_code == 0, resumed.output
    assert "dtype float32" in resumed.output
    assert load_checkpoint(checkpoint).dtype == "float32" and load_checkpoint(checkpoint).step == 4


def test_an_explicit_other_dtype_on_resume_is_refused_in_one_line_and_touches_nothing(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    native_bf16(monkeypatch, False)
    assert train().exit_code == 0
    checkpoint = workdir / "checkpoints" / "wide.pt"
    before = checkpoint.read_bytes()
    refused = train("train.max_iters=4", "system.dtype=bfloat16", resume=True)
    assert refused.exit_code == 2, refused.output
    errors = [line for line in refused.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in refused.output
    assert "trained in float32 and system.dtype is bfloat16" in errors[0]
    assert "--set system.dtype=float32" in errors[0]
    assert checkpoint.read_bytes() == before
    assert train("train.max_iters=4", "system.dtype=float32", resume=True).exit_code == 0  # the same dtype is fine


def test_a_checkpoint_from_before_the_record_resumes_by_the_rule_and_records_it(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    native_bf16(monkeypatch, False)
    assert train().exit_code == 0
    checkpoint = workdir / "checkpoints" / "wide.pt"
    payload = torch.load(checkpoint, weights_only=True)
    del payload["dtype"]  # as hellogpt wrote it before recording dtypes
    torch.save(payload, checkpoint)
    assert load_checkpoint(checkpoint).dtype is None
    resumed = train("train.max_iters=4", resume=True)
    assert resumed.exit_code == 0, resumed.output
    assert load_checkpoint(checkpoint).dtype == "float32"


def test_info_shows_the_recorded_dtype(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    native_bf16(monkeypatch, False)
    assert train().exit_code == 0
    shown = CliRunner().invoke(app, ["info", "checkpoints/wide.pt", "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["dtype"] == "float32"


def test_a_damaged_dtype_field_is_one_line(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    native_bf16(monkeypatch, False)
    assert train().exit_code == 0
    checkpoint = workdir / "checkpoints" / "wide.pt"
    payload = torch.load(checkpoint, weights_only=True)
    torch.save({**payload, "dtype": "float8"}, checkpoint)
    refused = train("train.max_iters=4", resume=True)
    assert refused.exit_code == 2 and "dtype is 'float8'" in refused.output and "Traceback" not in refused.output
