"""A disk that fills up mid-write: one line naming the file and the free space, exit code 2, and every file that
was there before left byte for byte as it was (no half-written file, no temporary file left behind).

The full disk is simulated at `hellogpt.files.open_for_writing`, the one place hellogpt opens files for writing;
one test also fills a real 1 MB tmpfs where mounting is allowed.
"""

from __future__ import annotations

import errno
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Optional

import pytest
from typer.testing import CliRunner

from hellogpt import files
from hellogpt.checkpoints.format import save_checkpoint
from hellogpt.cli import app
from tests.cli.test_export import as_checkpoint
from tests.model.test_hf import tiny_payload
from tests.train.conftest import TINY_SETTINGS, shakespeare_text, write_char_dataset

TEXT = "To be, or not to be, that is the question.\n" * 40
FillDisk = Callable[..., None]


class FillingFile:
    """A real file on a disk with `disk["free"]` bytes left: a write that does not fit raises ENOSPC."""

    def __init__(self, file: IO[Any], disk: dict[str, int]) -> None:
        self._file = file
        self._disk = disk

    def write(self, data: Any) -> int:
        size = len(data.encode("utf-8")) if isinstance(data, str) else memoryview(data).nbytes
        if size > self._disk["free"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._disk["free"] -= size
        return self._file.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def __enter__(self) -> FillingFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._file.close()


@pytest.fixture
def fill_disk(monkeypatch: pytest.MonkeyPatch) -> FillDisk:
    """fill_disk(after_bytes, only=...): from now on the disk is full after `after_bytes` more bytes, for the files
    `only` accepts (all by default)."""
    return disk_filler(monkeypatch)


def disk_filler(monkeypatch: pytest.MonkeyPatch) -> FillDisk:
    """What the `fill_disk` fixture gives, for test modules elsewhere."""

    def fill(after_bytes: int, only: Optional[Callable[[Path], bool]] = None) -> None:
        disk = {"free": after_bytes}
        real_open = files.open_for_writing

        def open_on_a_filling_disk(path: Path, mode: str = "wb", encoding: Optional[str] = None) -> IO[Any]:
            opened = real_open(path, mode, encoding)
            if only is not None and not only(Path(path)):
                return opened
            return FillingFile(opened, disk)  # type: ignore[return-value]

        monkeypatch.setattr(files, "open_for_writing", open_on_a_filling_disk)

    return fill


def invoke(*arguments: str):
    return CliRunner().invoke(app, list(arguments))


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (temporary ones included) with its bytes."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def assert_one_error_line(result, *fragments: str) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.output
    line = " ".join(lines[0].split())
    for fragment in fragments:
        assert fragment in line, line
    return line


def test_prepare_on_a_full_disk_names_the_bin_and_keeps_the_previous_dataset(
    tmp_path: Path, fill_disk: FillDisk
) -> None:
    source, out_dir = tmp_path / "small.txt", tmp_path / "data"
    source.write_text(TEXT)
    assert invoke("prepare", str(source), "--out", str(out_dir), "--tokenizer", "char").exit_code == 0
    before = snapshot(tmp_path)
    fill_disk(after_bytes=100)
    result = invoke("prepare", str(source), "--out", str(out_dir), "--tokenizer", "char", "--force")
    assert_one_error_line(
        result, f"no space left on device writing {out_dir / 'train.bin'}:", "MB free on /", "choose another --out"
    )
    assert snapshot(tmp_path) == before


def test_prepare_on_a_full_disk_leaves_no_new_folder_behind(tmp_path: Path, fill_disk: FillDisk) -> None:
    source = tmp_path / "small.txt"
    source.write_text(TEXT)
    fill_disk(after_bytes=100)
    result = invoke("prepare", str(source), "--out", str(tmp_path / "data"), "--tokenizer", "char")
    assert_one_error_line(result, "no space left on device writing")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["small.txt"]


def test_export_on_a_full_disk_names_the_weights_and_keeps_the_previous_export(
    tmp_path: Path, fill_disk: FillDisk
) -> None:
    checkpoint, out_dir = tmp_path / "tiny.pt", tmp_path / "exported"
    save_checkpoint(checkpoint, as_checkpoint(tiny_payload()))
    assert invoke("export", str(checkpoint), str(out_dir)).exit_code == 0
    before = snapshot(tmp_path)
    fill_disk(after_bytes=10_000)  # config.json fits, the weights do not
    result = invoke("export", str(checkpoint), str(out_dir), "--force")
    assert_one_error_line(
        result, f"no space left on device writing {out_dir / 'model.safetensors'}:", "choose another OUT_DIR"
    )
    assert snapshot(tmp_path) == before  # the staging directory is gone too


def _is_checkpoint_temp(path: Path) -> bool:
    return path.name.endswith(".tmp") and ".pt." in path.name


@pytest.fixture
def trained_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A finished tiny run in tmp_path (the current folder); returns the command that trains it again."""
    monkeypatch.chdir(tmp_path)
    write_char_dataset(tmp_path / "data" / "tiny", shakespeare_text())
    settings = [*TINY_SETTINGS, "train.gradient_accumulation_steps=1"]
    command = ["train", "--data", "data/tiny", "--checkpoint", "tiny.pt", "--plain"]
    command += [argument for setting in settings for argument in ("--set", setting)]
    assert invoke(*command).exit_code == 0
    return command


def test_a_checkpoint_save_on_a_full_disk_is_one_line_and_keeps_the_old_checkpoint(
    tmp_path: Path, trained_once: list[str], fill_disk: FillDisk
) -> None:
    before = snapshot(tmp_path / "checkpoints")
    fill_disk(after_bytes=1_000, only=_is_checkpoint_temp)
    result = invoke(*trained_once, "--overwrite")
    assert_one_error_line(result, "no space left on device writing checkpoints/tiny", "MB free on /")
    assert snapshot(tmp_path / "checkpoints") == before


def test_run_records_on_a_full_disk_are_one_line_naming_metrics(
    tmp_path: Path, trained_once: list[str], fill_disk: FillDisk
) -> None:
    fill_disk(after_bytes=200, only=lambda path: path.name == "metrics.jsonl")
    result = invoke(*trained_once, "--overwrite")
    assert_one_error_line(result, "no space left on device writing runs/", "metrics.jsonl", "train.runs_dir")


def test_a_read_only_disk_is_one_line_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def read_only(path: Path, mode: str = "wb", encoding: Optional[str] = None) -> IO[Any]:
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    checkpoint, out_dir = tmp_path / "tiny.pt", tmp_path / "exported"
    save_checkpoint(checkpoint, as_checkpoint(tiny_payload()))
    monkeypatch.setattr(files, "open_for_writing", read_only)
    result = invoke("export", str(checkpoint), str(out_dir))
    assert_one_error_line(result, f"cannot write {out_dir / 'config.json'}:", "read-only file system")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tiny.pt"]


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Path:
    """A real 1 MB tmpfs; skipped where this process may not mount one (not root, in a container)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], capture_output=True, check=False)


def test_prepare_on_a_really_full_disk_is_one_line(tmp_path: Path, tiny_disk: Path) -> None:
    small, large = tmp_path / "small.txt", tmp_path / "large.txt"
    small.write_text(TEXT)
    large.write_text(TEXT * 200)  # 350k characters: 700 kB of char-level bins, more than the disk has left
    out_dir = tiny_disk / "data"
    assert invoke("prepare", str(small), "--out", str(out_dir), "--tokenizer", "char").exit_code == 0
    (tiny_disk / "filler").write_bytes(b"\0" * 700_000)
    before = snapshot(tiny_disk)
    result = invoke("prepare", str(large), "--out", str(out_dir), "--tokenizer", "char")
    assert_one_error_line(result, f"no space left on device writing {out_dir}/", f"MB free on {tiny_disk}")
    assert snapshot(tiny_disk) == before
