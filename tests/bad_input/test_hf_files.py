"""Damaged or hostile Hugging Face model folders: one line naming the file, exit 2, nothing read that the file lacks.

The weights reader checks a safetensors header against the file's size before it allocates anything, and a
folder whose config.json asks for its own Python code (`auto_map`) is refused before transformers sees it.
"""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel

from hellogpt.errors import UserError
from hellogpt.model.hf import _read_safetensors
from tests.bad_input.test_checkpoints import assert_one_line_error, files_under, invoke

Header = dict[str, Any]


def split_safetensors(data: bytes) -> tuple[Header, bytes]:
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + size]), data[8 + size :]


def join_safetensors(header: Any, body: bytes) -> bytes:
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + body


def with_header(change: Callable[[Header], None]) -> Callable[[bytes], bytes]:
    """A damage that edits the JSON header (the file stays self-consistent in its header length)."""

    def damaged(data: bytes) -> bytes:
        header, body = split_safetensors(data)
        change(header)
        return join_safetensors(header, body)

    return damaged


def first_tensor(header: Header) -> Header:
    return header[next(name for name in header if name != "__metadata__")]


# Each turns a good safetensors file into a damaged or hostile one.
DAMAGES: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda data: b"",
    "cut-in-length": lambda data: data[:5],
    "cut-in-header": lambda data: data[: 8 + struct.unpack("<Q", data[:8])[0] // 2],
    "cut-in-data": lambda data: data[:-3],
    "huge-header-size": lambda data: struct.pack("<Q", 2**64 - 1) + data[8:],
    "header-size-past-end": lambda data: struct.pack("<Q", len(data)) + data[8:],
    "header-not-json": lambda data: data[:8] + b"\xff" * (len(data) - 8),
    "header-a-list": lambda data: join_safetensors([1, 2], split_safetensors(data)[1]),
    "header-deeply-nested": lambda data: struct.pack("<Q", 200_000) + b"[" * 100_000 + b"]" * 100_000,
    "offsets-past-end": with_header(lambda header: first_tensor(header).update(data_offsets=[0, 2**40])),
    "huge-shape": with_header(lambda header: first_tensor(header).update(shape=[2**20, 2**20], data_offsets=[0, 2**42])),
    "negative-shape": with_header(lambda header: first_tensor(header).update(shape=[-1, 4])),
    "float-shape": with_header(lambda header: first_tensor(header).update(shape=[2.0, 2])),
    "empty-with-vast-dims": with_header(lambda header: first_tensor(header).update(shape=[0, 10**20, 10**20])),
    "unknown-dtype": with_header(lambda header: first_tensor(header).update(dtype="F128")),
    "dtype-a-list": with_header(lambda header: first_tensor(header).update(dtype=["F32"])),
    "bytes-disagree-with-shape": with_header(lambda header: first_tensor(header).update(shape=[1])),
    "offsets-not-a-pair": with_header(lambda header: first_tensor(header).update(data_offsets=[0])),
    "negative-offset": with_header(lambda header: first_tensor(header).update(data_offsets=[-4, 0])),
    "entry-not-an-object": with_header(lambda header: header.update(extra=7)),
    "overlapping-tensors": with_header(lambda header: header.update(twin={**first_tensor(header)})),
}


@pytest.fixture
def small_file(tmp_path: Path) -> Path:
    """A small safetensors file written by the safetensors package itself."""
    path = tmp_path / "model.safetensors"
    save_file({"a": torch.arange(12, dtype=torch.float32).reshape(3, 4), "b": torch.ones(5, dtype=torch.int64)}, path)
    return path


def read_all(path: Path) -> dict[str, torch.Tensor]:
    return dict(_read_safetensors(path, "tiny"))


def test_a_good_file_reads_back_exactly(small_file: Path) -> None:
    tensors = read_all(small_file)
    assert torch.equal(tensors["a"], torch.arange(12, dtype=torch.float32).reshape(3, 4))
    assert torch.equal(tensors["b"], torch.ones(5, dtype=torch.int64))


@pytest.mark.parametrize("damage", list(DAMAGES), ids=list(DAMAGES))
def test_a_damaged_safetensors_file_is_one_user_error_naming_it(damage: str, small_file: Path) -> None:
    small_file.write_bytes(DAMAGES[damage](small_file.read_bytes()))
    with pytest.raises(UserError, match="is not a readable safetensors file") as raised:
        read_all(small_file)
    assert str(small_file) in str(raised.value) and "\n" not in str(raised.value)


def test_random_byte_flips_give_tensors_or_one_user_error(small_file: Path) -> None:
    """A seeded fuzz: any byte of the length or header replaced gives the tensors back or a UserError, nothing else."""
    original = small_file.read_bytes()
    header_end = 8 + struct.unpack("<Q", original[:8])[0]
    fuzz = random.Random(20)
    for _ in range(400):
        damaged = bytearray(original)
        for _ in range(fuzz.randint(1, 3)):
            damaged[fuzz.randrange(header_end)] = fuzz.randrange(256)
        small_file.write_bytes(bytes(damaged))
        try:
            tensors = read_all(small_file)
        except UserError as error:
            assert "\n" not in str(error)
            continue
        assert sum(tensor.numel() * tensor.element_size() for tensor in tensors.values()) <= len(original)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smallest transformers GPT-2 that takes the GPT-2 tokenizer, saved as save_pretrained does."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, n_positions=32)).save_pretrained(folder)
    return folder


@pytest.fixture
def model_folder(hf_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "tiny-gpt2"
    folder.mkdir()
    for path in hf_folder.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


def chat_from(folder: Path):
    return invoke("chat", "--from", str(folder), "--prompt", "a", "--max-new-tokens", "2", "--set", "system.dtype=float32")


def test_the_tiny_model_folder_chats(model_folder: Path) -> None:
    result = chat_from(model_folder)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("damage", ["cut-in-data", "huge-header-size", "negative-shape", "huge-shape", "header-a-list"])
def test_chat_from_a_folder_with_damaged_weights_is_one_line(damage: str, model_folder: Path) -> None:
    weights = model_folder / "model.safetensors"
    weights.write_bytes(DAMAGES[damage](weights.read_bytes()))
    before = files_under(model_folder.parent)
    assert_one_line_error(chat_from(model_folder), str(weights), "is not a readable safetensors file")
    assert files_under(model_folder.parent) == before


def add_auto_map(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig", "AutoModelForCausalLM": "modeling_evil.Evil"}
    (folder / "config.json").write_text(json.dumps(config))
    # Code that would leave a mark if anything imported it.
    marker = folder.parent / "code-ran"
    for module in ("configuration_evil.py", "modeling_evil.py"):
        (folder / module).write_text(f"open({str(marker)!r}, 'w').close()\n")


@pytest.mark.parametrize(
    "command",
    [
        ("chat", "--from", "{folder}", "--prompt", "a"),
        ("tune", "--from", "{folder}", "--data", "data", "--plain"),
        ("tune", "--from", "{folder}", "--data", "data", "--plain", "--lora"),
    ],
    ids=["chat", "tune", "tune-lora"],
)
def test_a_folder_that_ships_its_own_code_is_refused_in_one_line(command: tuple[str, ...], model_folder: Path) -> None:
    add_auto_map(model_folder)
    before = files_under(model_folder.parent)
    result = invoke(*(part.format(folder=model_folder) for part in command))
    assert_one_line_error(result, str(model_folder), "auto_map", "never runs")
    assert files_under(model_folder.parent) == before
    assert not (model_folder.parent / "code-ran").exists()


@pytest.mark.slow
def test_a_hub_model_that_ships_its_own_code_is_refused_in_one_line(hf_folder: Path, tmp_path: Path) -> None:
    """The same refusal for a hub id (here from the HF_HOME cache, offline), before transformers reads the config."""
    snapshot = tmp_path / "hf_home" / "hub" / "models--someone--tiny-gpt2" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abcd")
    for path in hf_folder.iterdir():
        (snapshot / path.name).write_bytes(path.read_bytes())
    add_auto_map(snapshot)
    before = files_under(tmp_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "NO_COLOR": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "hellogpt", "chat", "--from", "someone/tiny-gpt2", "--prompt", "a"],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "'someone/tiny-gpt2' ships its own Python code" in lines[0] and "auto_map" in lines[0], lines[0]
    assert files_under(tmp_path) == before
    assert not (snapshot.parent / "code-ran").exists()
