"""The CLI shell: instant help, version, and one-line user errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from hellogpt import __version__
from hellogpt.cli import app

runner = CliRunner()


def test_help_does_not_import_torch_transformers_or_the_config_schema() -> None:
    code = (
        "import sys; from hellogpt.cli import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'numpy', 'tiktoken', 'pydantic', 'yaml') if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY=\n" in result.stdout


def test_python_dash_m_runs_the_same_cli() -> None:
    result = subprocess.run([sys.executable, "-m", "hellogpt", "--version"], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.strip() == f"hellogpt {__version__}"


def test_every_command_is_registered() -> None:
    result = runner.invoke(app, ["--help"])
    for command in ("prepare", "train", "tune", "chat", "info", "export"):
        assert command in result.output


def test_info_config_prints_yaml_with_provenance() -> None:
    result = runner.invoke(app, ["info", "config", "--profile", "quickstart", "--set", "optim.learning_rate=0.01"])
    assert result.exit_code == 0
    assert "  learning_rate: 0.01  # --set" in result.output
    assert "  dataset: quickstart  # profile quickstart" in result.output


def test_info_config_json_is_one_object() -> None:
    result = runner.invoke(app, ["info", "config", "--profile", "edgar_poe", "--json"])
    payload = json.loads(result.output)
    assert payload["config"]["model"]["n_embd"] == 384
    assert payload["provenance"]["model.n_embd"] == "profile edgar_poe"


def test_info_profiles_lists_the_builtin_profiles() -> None:
    result = runner.invoke(app, ["info", "profiles", "--json"])
    assert set(json.loads(result.output)) >= {"base", "quickstart", "edgar_poe", "poems", "gpt2-tune"}


def test_bad_config_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  learing_rate: 0.1\n")
    result = subprocess.run(
        [sys.executable, "-m", "hellogpt", "info", "config", "--config", str(bad)],
        capture_output=True,
        text=True,
        env={"NO_COLOR": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == f"error: {bad}: unknown key 'optim.learing_rate' (did you mean 'optim.learning_rate'?)"


def test_unknown_profile_exit_code_2() -> None:
    result = runner.invoke(app, ["info", "config", "--profile", "nope"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
