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
