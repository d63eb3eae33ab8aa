"""A BPE trained on the corpus (`prepare --tokenizer bpe:N`): training split only, specials, rebuilt from meta."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hellogpt.data.bpe import BpeTokenizer, train_bpe
from hellogpt.data.loader import open_dataset
from hellogpt.data.prepare import TOKENIZER_FILE, prepare_dataset
from hellogpt.data.tokenizer import Tokenizer, reads_ids_of, tokenizer_from_description
from hellogpt.errors import UserError

MADE_UP_WORD = "zorblaxquint"
TRAIN_TEXT = "The raven sat upon the bust of Pallas, just above my chamber door.\n" * 60


@pytest.fixture(scope="module")
def poems_bpe(poems_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped poems prepared with a BPE of 1024 ids trained on them (read-only for the tests)."""
    out_dir = tmp_path_factory.mktemp("poems_bpe") / "data"
    prepare_dataset([str(poems_dir)], out_dir, tokenizer="bpe:1024")
    return out_dir


def _corpus(tmp_path: Path, train_word: str) -> Path:
    """Three documents: the last, alone in validation, repeats the made-up word; `train_word` goes into training."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text(TRAIN_TEXT + f"{train_word} " * 300)
    (corpus / "b.txt").write_text(TRAIN_TEXT)
    (corpus / "c.txt").write_text(f"Once upon a midnight {MADE_UP_WORD}.\n" * 100)
    return corpus


@pytest.mark.parametrize("train_word, pieces", [("nevermore", "several"), (MADE_UP_WORD, "one")])
def test_a_word_repeated_only_in_validation_never_becomes_one_token(tmp_path: Path, train_word: str, pieces: str) -> None:
    result = prepare_dataset([str(_corpus(tmp_path, train_word))], tmp_path / "out", tokenizer="bpe:512", val_fraction=0.25)
    assert [Path(name).name for name in result.meta["val_documents"]] == ["c.txt"]
    tokenizer = open_dataset(tmp_path / "out").tokenizer
    ids = tokenizer.encode(f" {MADE_UP_WORD}")
    assert (len(ids) == 1) == (pieces == "one")  # in training, the same word does become one token


def test_prepare_writes_tokenizer_json_and_meta_rebuilds_the_same_tokenizer(poems_bpe: Path) -> None:
    meta = json.loads((poems_bpe / "meta.json").read_text())
    assert meta["tokenizer_name"] == "bpe:1024" and meta["vocab_size"] == 1024 and meta["dtype"] == "uint16"
    assert meta["tokenizer"]["kind"] == "bpe"
    assert json.loads((poems_bpe / TOKENIZER_FILE).read_text()) == json.loads(meta["tokenizer"]["tokenizer_json"])
    dataset = open_dataset(poems_bpe)
    train = dataset.tokens("train")
    assert int(train.max()) < 1024 and dataset.tokenizer.eot_id in train  # documents separated by end-of-text
    text = "Nevermore, quoth the raven.\n"
    assert tokenizer_from_description(meta["tokenizer"]).encode(text) == dataset.tokenizer.encode(text)


def test_the_bins_decode_back_to_the_corpus(poems_bpe: Path, poems_dir: Path) -> None:
    dataset = open_dataset(poems_bpe)
    head = dataset.tokenizer.decode(dataset.tokens("train")[:2000].tolist())
    first = sorted(poems_dir.glob("*.txt"))[0].read_text(encoding="utf-8")
    assert first.startswith(head[:-8])  # the last token may end inside a character


def test_bpe_encoding_decoding_and_token_bytes_round_trip_any_text(poems_bpe: Path) -> None:
    tokenizer = open_dataset(poems_bpe).tokenizer
    for text in ["naïve café — 東京 🚀 e\u0301", "tabs\tand  spaces\n\n", "<|endoftext|> is text"]:
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids) == text
        assert b"".join(tokenizer.token_bytes(token_id) for token_id in ids) == text.encode("utf-8")
        assert tokenizer.eot_id not in ids


def test_bpe_special_tokens_come_after_the_vocabulary_and_are_never_encoded_from_text(poems_bpe: Path) -> None:
    plain = open_dataset(poems_bpe).tokenizer
    chat = plain.with_special_tokens(["<|im_start|>", "<|im_end|>"])
    assert chat.special_tokens == {"<|endoftext|>": plain.eot_id, "<|im_start|>": 1024, "<|im_end|>": 1025}
    assert chat.vocab_size == 1026
    assert chat.encode("say <|im_end|>") == plain.encode("say <|im_end|>")
    assert 1025 not in chat.encode("say <|im_end|>")
    assert chat.decode([1024, *chat.encode("hi"), 1025]) == "<|im_start|>hi<|im_end|>"
    rebuilt = tokenizer_from_description(chat.description())
    assert isinstance(rebuilt, Tokenizer) and rebuilt.special_tokens == chat.special_tokens
    assert reads_ids_of(chat.description(), plain.description())
    assert not reads_ids_of(plain.description(), chat.description())


def test_a_small_corpus_gives_a_smaller_vocabulary_than_asked() -> None:
    tokenizer = train_bpe(["ab ab ab ab"], 4096)
    assert 257 <= tokenizer.vocab_size < 300
    assert len(tokenizer.encode(" ab")) == 1


def test_array_encoding_equals_list_encoding(poems_bpe: Path, poems_dir: Path) -> None:
    tokenizer = open_dataset(poems_bpe).tokenizer
    for path in sorted(poems_dir.glob("*.txt")):
        text = path.read_text(encoding="utf-8")[:3000]
        assert tokenizer.encode_to_array(text).tolist() == tokenizer.encode(text)


@pytest.mark.parametrize("name", ["bpe:7", "bpe:abc", "bpe:65537", "bpe:", "sentencepiece"])
def test_a_bad_tokenizer_name_is_one_user_error(name: str, poems_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="bpe:N"):
        prepare_dataset([str(poems_dir)], tmp_path / "out", tokenizer=name)
    assert not (tmp_path / "out").exists()


def test_an_unreadable_tokenizer_json_is_a_user_error() -> None:
    with pytest.raises(UserError, match="tokenizer.json"):
        BpeTokenizer("{not json")


def test_bits_per_byte_divides_by_the_texts_bytes_and_special_tokens_count_none(poems_bpe: Path) -> None:
    from hellogpt.evaluate import _bytes_per_token

    tokenizer = open_dataset(poems_bpe).tokenizer.with_special_tokens(["<|im_end|>"])
    sizes = _bytes_per_token(tokenizer)
    text = "Nevermore — 東京 🚀"
    assert int(sizes[tokenizer.encode(text)].sum()) == len(text.encode("utf-8"))
    assert all(sizes[token_id] == 0 for token_id in tokenizer.special_tokens.values())


def test_preparing_the_folder_again_with_another_tokenizer_removes_the_old_tokenizer_json(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TRAIN_TEXT)
    prepare_dataset([str(corpus)], tmp_path / "out", tokenizer="bpe:300")
    assert (tmp_path / "out" / TOKENIZER_FILE).is_file()
    prepare_dataset([str(corpus)], tmp_path / "out", tokenizer="char")
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["meta.json", "train.bin", "val.bin"]


def test_worker_processes_write_the_same_bpe_bins_as_threads(
    poems_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hellogpt.data import prepare

    threaded = prepare_dataset([str(poems_dir)], tmp_path / "threads", tokenizer="bpe:512", chunk_chars=20_000)
    assert prepare._worker_start_method() == "spawn"  # tokenizers' threads ran the training: never fork after them
    encoders: list[prepare._Encoders] = []
    real_encoders = prepare._Encoders
    monkeypatch.setattr(prepare, "PROCESS_POOL_MIN_BYTES", 0)
    monkeypatch.setattr(prepare, "_usable_cores", lambda: 2)
    monkeypatch.setattr(prepare, "_Encoders", lambda *args: encoders.append(real_encoders(*args)) or encoders[-1])
    in_processes = prepare_dataset([str(poems_dir)], tmp_path / "processes", tokenizer="bpe:512", chunk_chars=20_000)
    assert encoders and encoders[0].in_processes
    for split in ("train", "val"):
        assert (in_processes.out_dir / f"{split}.bin").read_bytes() == (threaded.out_dir / f"{split}.bin").read_bytes()
