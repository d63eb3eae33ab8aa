"""`hellogpt export CHECKPOINT OUT.gguf`: a GGUF file in f16 by default, how to run it, and bad input in one line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hellogpt.checkpoints.format import Checkpoint, gpt_config_from_args, save_checkpoint
from hellogpt.cli import app
from hellogpt.cli.export import GgufType
from hellogpt.gguf_export import GGUF_TENSOR_TYPES
from hellogpt.model.gpt import GPT


@pytest.fixture(scope="module")
def checkpoint_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = gpt_config_from_args(
        dict(n_layer=1, n_head=2, n_embd=32, block_size=32, vocab_size=50304, dropout=0.0, bias=True)
    )
    path = tmp_path_factory.mktemp("export_gguf") / "tiny.pt"
    save_checkpoint(path, Checkpoint(model_args=config, model=GPT(config).state_dict(), tokenizer={"kind": "gpt2"}))
    return path


def export(*arguments: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["export", *arguments])
    return result.exit_code, result.output


def test_a_gguf_path_writes_f16_gguf_and_says_how_to_run_it_in_llama_cpp_and_ollama(
    checkpoint_path: Path, tmp_path: Path
) -> None:
    from tests.test_gguf_export import read_gguf

    code, output = export(str(checkpoint_path), str(tmp_path / "tiny.gguf"))
    assert code == 0, output
    assert f"exported {checkpoint_path} to {tmp_path / 'tiny.gguf'} (GGUF, gpt2, f16," in output
    assert f"llama-cli -m {tmp_path / 'tiny.gguf'}" in output and "'FROM ./tiny.gguf', then: ollama create" in output
    contents = read_gguf(tmp_path / "tiny.gguf")
    assert contents.keys["general.file_type"] == 1  # MOSTLY_F16: llama.cpp's converter's default for fp32 weights
    assert contents.keys["general.name"] == "tiny"


def test_gguf_type_for_a_transformers_directory_is_one_line(checkpoint_path: Path, tmp_path: Path) -> None:
    code, output = export(str(checkpoint_path), str(tmp_path / "exported"), "--gguf-type", "q8_0")
    assert code == 2
    assert output.strip() == "error: --gguf-type applies to GGUF only: name OUT *.gguf or pass --format gguf"
    assert not (tmp_path / "exported").exists()


def test_an_existing_gguf_is_refused_in_one_line(checkpoint_path: Path, tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"keep me")
    code, output = export(str(checkpoint_path), str(tmp_path / "model.bin"), "--format", "gguf")
    assert code == 2
    assert output.strip() == (
        f"error: {tmp_path / 'model.bin'} already exists: choose another OUT.gguf or pass --force to replace it"
    )


def test_without_the_gguf_package_the_command_says_to_install_it_in_one_line(
    checkpoint_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "gguf", None)  # `import gguf` now raises ImportError
    code, output = export(str(checkpoint_path), str(tmp_path / "tiny.gguf"))
    assert code == 2
    assert output.strip() == "error: writing GGUF needs the gguf package (llama.cpp's writer): pip install gguf"


def test_the_commands_gguf_types_are_the_exports() -> None:
    assert tuple(choice.value for choice in GgufType) == GGUF_TENSOR_TYPES
