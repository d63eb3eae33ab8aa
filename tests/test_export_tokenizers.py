"""`hellogpt export` writes one tokenizer.json for every tokenizer: AutoTokenizer loads it with hellogpt's ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from hellogpt.data.bpe import train_bpe
from hellogpt.data.tokenizer import CharTokenizer, Tokenizer, gpt2_tokenizer
from hellogpt.export import export_checkpoint
from tests.model.test_hf import tiny_payload

TEXT = "Once upon a midnight dreary, naïve café 🚀 e\u0301.\n"


def _export(tmp_path: Path, tokenizer: Tokenizer, rows: int, **extra: object) -> Path:
    payload = {**tiny_payload(vocab_size=rows, tokenizer=tokenizer.description()), **extra}
    return export_checkpoint(payload, tmp_path / "exported")


def test_a_trained_bpe_model_exports_a_tokenizer_auto_tokenizer_loads_with_our_ids(tmp_path: Path) -> None:
    tokenizer = train_bpe([TEXT * 20, "The raven, nevermore.\n" * 20], 300)
    out_dir = _export(tmp_path, tokenizer, rows=320)  # padded rows are cut to the tokenizer's
    loaded = AutoTokenizer.from_pretrained(out_dir)
    assert loaded(TEXT)["input_ids"] == tokenizer.encode(TEXT)
    assert loaded.eos_token_id == tokenizer.eot_id
    assert json.loads((out_dir / "config.json").read_text())["vocab_size"] == tokenizer.vocab_size
    assert not (out_dir / "vocab.json").exists()


def test_a_char_model_exports_a_tokenizer_auto_tokenizer_loads_with_our_ids(tmp_path: Path) -> None:
    tokenizer = CharTokenizer.from_texts([TEXT])
    out_dir = _export(tmp_path, tokenizer, rows=tokenizer.vocab_size)
    loaded = AutoTokenizer.from_pretrained(out_dir)
    assert loaded(TEXT)["input_ids"] == tokenizer.encode(TEXT)
    assert loaded.decode(tokenizer.encode(TEXT)) == TEXT


def test_gpt2_exports_keep_vocab_and_merges_beside_tokenizer_json(tmp_path: Path) -> None:
    out_dir = _export(tmp_path, gpt2_tokenizer(), rows=50304)
    assert {"vocab.json", "merges.txt", "tokenizer.json"} <= {path.name for path in out_dir.iterdir()}
    assert AutoTokenizer.from_pretrained(out_dir)(TEXT)["input_ids"] == gpt2_tokenizer().encode(TEXT)


@pytest.mark.parametrize("make", [gpt2_tokenizer, lambda: CharTokenizer.from_texts([TEXT])])
def test_a_chat_model_exports_its_markers_and_template_and_keeps_their_rows(make, tmp_path: Path) -> None:
    from hellogpt.data.chat_template import CHATML_TEMPLATE, chat_tokenizer

    tokenizer = chat_tokenizer(make())
    out_dir = _export(tmp_path, tokenizer, rows=max(tokenizer.vocab_size, 64), chat_template=CHATML_TEMPLATE)
    loaded = AutoTokenizer.from_pretrained(out_dir)
    assert json.loads((out_dir / "config.json").read_text())["vocab_size"] == tokenizer.vocab_size
    for name, token_id in tokenizer.special_tokens.items():
        assert loaded.convert_tokens_to_ids(name) == token_id
    assert loaded.chat_template == CHATML_TEMPLATE


def _qwen3_payload(tokenizer: Tokenizer, **extra: object) -> dict:
    from hellogpt.model.base import GPTConfig
    from tests.model.test_qwen3 import trained_looking

    config = GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=64, vocab_size=tokenizer.vocab_size, dropout=0.0,
                       bias=False, arch="qwen3")
    return {"model_args": config.to_dict(), "model": trained_looking(config).state_dict(),
            "tokenizer": tokenizer.description(), **extra}


@pytest.mark.parametrize("kind", ["bpe", "char", "bpe-chat", "gpt2-chat"])
def test_an_export_loads_back_from_its_folder_with_the_tokenizer_it_was_trained_with(kind: str, tmp_path: Path) -> None:
    """`chat`/`serve --from DIR` (load_model), `eval --from DIR` and `tune --from DIR` read what the export recorded:
    a trained BPE or a char table (not GPT-2's BPE), and a chat model's markers and template."""
    from hellogpt.data.chat_template import CHATML_TEMPLATE, chat_tokenizer
    from hellogpt.evaluate import huggingface_target
    from hellogpt.model_source import load_model

    base = {
        "bpe": lambda: train_bpe([TEXT * 20, "The raven, nevermore.\n" * 20], 300),
        "char": lambda: CharTokenizer.from_texts([TEXT]),
        "bpe-chat": lambda: train_bpe([TEXT * 20], 290),
        "gpt2-chat": gpt2_tokenizer,
    }[kind]()
    chat = kind.endswith("chat")
    tokenizer = chat_tokenizer(base) if chat else base
    extra = {"chat_template": CHATML_TEMPLATE} if chat else {}
    out_dir = export_checkpoint(_qwen3_payload(tokenizer, **extra), tmp_path / "exported")

    loaded = load_model(None, str(out_dir))
    assert loaded.tokenizer.description() == tokenizer.description()
    assert loaded.tokenizer.encode(TEXT) == tokenizer.encode(TEXT)
    assert loaded.chat_template == (CHATML_TEMPLATE if chat else None)
    assert loaded.model.config.vocab_size == tokenizer.vocab_size
    assert huggingface_target(str(out_dir)).tokenizer == tokenizer.description()


def test_a_chat_export_of_a_trained_bpe_chats_from_its_folder(tmp_path: Path) -> None:
    """Before exports recorded their tokenizer, `chat --from` encoded with GPT-2's BPE: ids past a 292-row model."""
    from typer.testing import CliRunner

    from hellogpt.cli import app
    from hellogpt.data.chat_template import CHATML_TEMPLATE, chat_tokenizer

    tokenizer = chat_tokenizer(train_bpe([TEXT * 20], 290))
    out_dir = export_checkpoint(_qwen3_payload(tokenizer, chat_template=CHATML_TEMPLATE), tmp_path / "exported")
    result = CliRunner().invoke(
        app, ["chat", "--from", str(out_dir), "--prompt", "hello", "--max-new-tokens", "4", "--temperature", "0",
              "--set", "system.dtype=float32"],
    )
    assert result.exit_code == 0, result.output


def test_a_char_export_from_before_the_tokenizer_file_still_loads_with_its_table(tmp_path: Path) -> None:
    from hellogpt.model.hf import CHAR_VOCABULARY_FILE, TOKENIZER_DESCRIPTION_FILE
    from hellogpt.model_source import load_model

    tokenizer = CharTokenizer.from_texts([TEXT])
    out_dir = export_checkpoint(_qwen3_payload(tokenizer), tmp_path / "exported")
    (out_dir / TOKENIZER_DESCRIPTION_FILE).rename(out_dir / CHAR_VOCABULARY_FILE)  # what such exports held
    assert load_model(None, str(out_dir)).tokenizer.encode(TEXT) == tokenizer.encode(TEXT)
