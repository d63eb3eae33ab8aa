"""GGUF export: the file holds what llama.cpp's converter writes, and llama.cpp decodes it as hellogpt does."""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from hellogpt import files
from hellogpt.checkpoints.format import Checkpoint, gpt_config_from_args, save_checkpoint
from hellogpt.checkpoints.lora_base import checkpoint_base
from hellogpt.checkpoints.loading import model_from_checkpoint, tokenizer_from_checkpoint
from hellogpt.data.bpe import train_bpe
from hellogpt.data.chat_template import CHATML_TEMPLATE
from hellogpt.decode.stream import stream_tokens
from hellogpt.errors import UserError
from hellogpt.data.tokenizer import tokenizer_from_description
from hellogpt.gguf_export import checkpoint_tokenizer, encode_tensor, export_gguf
from hellogpt.model.architectures import build_model
from hellogpt.model.gpt import GPT
from hellogpt.model.lora import LoraSpec, adapter_state_dict, add_adapters

gguf = pytest.importorskip("gguf", reason="GGUF export needs the gguf package: pip install gguf")

GPT2_VOCAB = 50257
CHAT_MARKERS = ["<|im_start|>", "<|im_end|>"]
TRAINING_TEXT = (
    "Once upon a midnight dreary, while I pondered, weak and weary, over many a quaint and curious volume of "
    "forgotten lore, while I nodded, nearly napping, suddenly there came a tapping, as of some one gently rapping, "
    "rapping at my chamber door. And the raven, never flitting, still is sitting, still is sitting on the pallid "
    "bust of Pallas just above my chamber door; and his eyes have all the seeming of a demon's that is dreaming. "
)
PROMPT = "while I nodded, nearly"
GREEDY_TOKENS = 32
TRAINING_WINDOW = 33
CONTEXT = 64


def tiny_config(**changes: Any) -> Any:
    """A GPT-2 of 2 layers, width 32 (q8_0's 32-value blocks divide every row), 64 positions, padded vocabulary."""
    shape = dict(n_layer=2, n_head=2, n_embd=32, block_size=CONTEXT, vocab_size=50304, dropout=0.0, bias=True)
    return gpt_config_from_args({**shape, **changes})


def trained_tiny_model(config: Any, token_ids: list[int], steps: int) -> Any:
    """Trained on batches of windows drawn from `token_ids` at random offsets until its greedy continuation is
    confident (near-ties would let rounding pick another token). Ids of one window's length are memorised by
    position (a few steps on GPT-2's 50k vocabulary); a longer text makes the model read the words (attention)."""
    torch.manual_seed(0)
    model = build_model(config)
    text = torch.tensor(token_ids)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    offsets = len(text) - TRAINING_WINDOW + 1
    for _ in range(steps):
        starts = torch.randint(0, offsets, (min(8, offsets),)).tolist()
        batch = torch.stack([text[start : start + TRAINING_WINDOW] for start in starts])
        _, loss = model(batch[:, :-1], batch[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def lora_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Checkpoint:
    """LoRA adapters (non-zero) over a trained tiny GPT-2 saved as a checkpoint: a chat model (ChatML markers)."""
    folder = tmp_path_factory.mktemp("gguf")
    config = tiny_config()
    one_window = tokenizer_from_description({"kind": "gpt2"}).encode(TRAINING_TEXT)[:TRAINING_WINDOW]
    base = trained_tiny_model(config, one_window, steps=30)
    base_path = folder / "base.pt"
    save_checkpoint(base_path, Checkpoint(model_args=config, model=base.state_dict(), tokenizer={"kind": "gpt2"}))
    _, reference = checkpoint_base(base_path, torch.float32)
    spec = LoraSpec(rank=4, alpha=8.0, dropout=0.0, targets=("attn.c_attn", "mlp.c_fc"))
    add_adapters(base, spec)
    with torch.no_grad():
        for name, parameter in base.named_parameters():
            if name.endswith("lora_B"):
                parameter.copy_(torch.randn_like(parameter) * 0.01)
    return Checkpoint(
        model_args=config, model=adapter_state_dict(base), lora=spec.to_dict(), base=reference,
        tokenizer={"kind": "gpt2", "special_tokens": CHAT_MARKERS}, chat_template=CHATML_TEMPLATE,
    )


@pytest.fixture(scope="module")
def gguf_f32(lora_checkpoint: Checkpoint, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The f32 export, written with --force over an older file of that name."""
    path = tmp_path_factory.mktemp("gguf_f32") / "model.gguf"
    path.write_bytes(b"an older export")
    return export_gguf(lora_checkpoint, path, tensor_type="f32", force=True).path


@pytest.fixture(scope="module")
def gguf_q8(lora_checkpoint: Checkpoint, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_gguf(lora_checkpoint, tmp_path_factory.mktemp("gguf_q8") / "model.gguf", tensor_type="q8_0").path


# GGUF's value types (gguf.GGUFValueType) as struct formats; strings and arrays are read by `read_gguf`.
GGUF_SCALAR_FORMATS = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d",
}
GGUF_STRING, GGUF_ARRAY = 8, 9
GGUF_DEFAULT_ALIGNMENT = 32


@dataclass
class GgufContents:
    """A GGUF file's keys and tensors (name -> shape as ggml writes it, type, data offset)."""

    keys: dict[str, Any]
    tensors: dict[str, tuple[list[int], int, int]]
    data: bytes
    data_start: int

    def f32_tensor(self, name: str) -> torch.Tensor:
        dims, tensor_type, offset = self.tensors[name]
        assert tensor_type == gguf.GGMLQuantizationType.F32
        values = np.frombuffer(self.data, np.float32, count=int(np.prod(dims)), offset=self.data_start + offset)
        return torch.from_numpy(values.copy()).reshape(list(reversed(dims)))


def read_gguf(path: Path) -> GgufContents:
    """The GGUF format (llama.cpp's docs/gguf.md) read in a few lines: gguf.GGUFReader takes 5-30 s on these
    machines for a file with GPT-2's 50257 tokens and 50000 merges (a numpy view per string), this a second."""
    data = path.read_bytes()
    offset = 0

    def take(fmt: str) -> Any:
        nonlocal offset
        (value,) = struct.unpack_from(fmt, data, offset)
        offset += struct.calcsize(fmt)
        return value

    def value(kind: int) -> Any:
        nonlocal offset
        if kind == GGUF_STRING:
            length = take("<Q")
            offset += length
            return data[offset - length : offset].decode("utf-8")
        if kind == GGUF_ARRAY:
            item_kind, count = take("<I"), take("<Q")
            return [value(item_kind) for _ in range(count)]
        return take(GGUF_SCALAR_FORMATS[kind])

    assert data[:4] == b"GGUF"
    offset = 4
    _version, n_tensors, n_keys = take("<I"), take("<Q"), take("<Q")
    keys = {value(GGUF_STRING): value(take("<I")) for _ in range(n_keys)}
    tensors = {}
    for _ in range(n_tensors):
        name = value(GGUF_STRING)
        dims = [take("<Q") for _ in range(take("<I"))]
        tensors[name] = (dims, take("<I"), take("<Q"))
    alignment = keys.get("general.alignment", GGUF_DEFAULT_ALIGNMENT)
    return GgufContents(keys, tensors, data, -(-offset // alignment) * alignment)


@pytest.fixture(scope="module")
def f32_contents(gguf_f32: Path) -> GgufContents:
    return read_gguf(gguf_f32)


def test_gguf_holds_gpt2s_keys_as_llama_cpps_converter_writes_them(f32_contents: GgufContents) -> None:
    keys = f32_contents.keys
    assert keys["general.architecture"] == "gpt2"
    assert keys["gpt2.context_length"] == CONTEXT
    assert (keys["gpt2.block_count"], keys["gpt2.embedding_length"]) == (2, 32)
    assert (keys["gpt2.feed_forward_length"], keys["gpt2.attention.head_count"]) == (128, 2)
    assert keys["gpt2.attention.layer_norm_epsilon"] == pytest.approx(1e-5)
    assert keys["general.file_type"] == gguf.LlamaFileType.ALL_F32


def test_gguf_tokenizer_is_gpt2_bpe_with_the_chat_markers_as_control_tokens(f32_contents: GgufContents) -> None:
    keys = f32_contents.keys
    assert (keys["tokenizer.ggml.model"], keys["tokenizer.ggml.pre"]) == ("gpt2", "gpt-2")
    tokens = keys["tokenizer.ggml.tokens"]
    assert len(tokens) == GPT2_VOCAB + 2
    assert tokens[15496] == "Hello" and tokens[995] == "Ġworld" and tokens[GPT2_VOCAB:] == CHAT_MARKERS
    types = keys["tokenizer.ggml.token_type"]
    assert {types[50256], types[50257], types[50258]} == {gguf.TokenType.CONTROL} and types[0] == gguf.TokenType.NORMAL
    assert keys["tokenizer.ggml.merges"][0] == "Ġ t"
    assert keys["tokenizer.ggml.bos_token_id"] == 50256
    # a chat model's reply ends at <|im_end|>
    assert keys["tokenizer.ggml.eos_token_id"] == keys["tokenizer.ggml.eot_token_id"] == 50258
    assert keys["tokenizer.ggml.add_bos_token"] is False
    assert keys["tokenizer.chat_template"] == CHATML_TEMPLATE


def test_gguf_of_a_lora_checkpoint_holds_the_merged_weights_cut_to_the_tokenizer(
    f32_contents: GgufContents, lora_checkpoint: Checkpoint
) -> None:
    merged = model_from_checkpoint(lora_checkpoint).state_dict()
    qkv = f32_contents.f32_tensor("blk.0.attn_qkv.weight")
    torch.testing.assert_close(qkv, merged["transformer.h.0.attn.c_attn.weight"], rtol=0, atol=0)
    embedding = f32_contents.f32_tensor("token_embd.weight")
    assert embedding.shape == (GPT2_VOCAB + 2, 32)  # our 50304 padding rows are not written
    torch.testing.assert_close(embedding, merged["transformer.wte.weight"][: GPT2_VOCAB + 2], rtol=0, atol=0)
    assert "output.weight" not in f32_contents.tensors  # tied: llama.cpp reads the token embedding as the head


def test_q8_0_quantizes_the_matrices_and_keeps_norms_biases_and_positions_in_f32(gguf_q8: Path) -> None:
    contents = read_gguf(gguf_q8)
    types = {name: tensor_type for name, (_, tensor_type, _) in contents.tensors.items()}
    quantized = {"token_embd.weight", "blk.0.attn_qkv.weight", "blk.1.ffn_down.weight"}
    assert {types[name] for name in quantized} == {gguf.GGMLQuantizationType.Q8_0}
    kept = {"position_embd.weight", "output_norm.weight", "blk.0.attn_norm.bias", "blk.1.ffn_up.bias"}
    assert {types[name] for name in kept} == {gguf.GGMLQuantizationType.F32}
    assert contents.keys["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q8_0


def test_q8_0_falls_back_to_f16_for_rows_its_32_value_blocks_do_not_divide() -> None:
    rows = np.arange(4 * 48, dtype=np.float32).reshape(4, 48)
    assert encode_tensor(rows, "blk.0.ffn_up.weight", "q8_0")[1] == gguf.GGMLQuantizationType.F16
    assert encode_tensor(rows[:, :32], "blk.0.ffn_up.weight", "q8_0")[1] == gguf.GGMLQuantizationType.Q8_0


def test_force_replaced_the_older_file_whole(gguf_f32: Path) -> None:
    assert gguf_f32.read_bytes()[:4] == b"GGUF"
    assert [path.name for path in gguf_f32.parent.iterdir()] == ["model.gguf"]  # no temporary file left


def test_an_existing_file_is_refused_without_force(lora_checkpoint: Checkpoint, tmp_path: Path) -> None:
    (tmp_path / "model.gguf").write_bytes(b"keep me")
    with pytest.raises(UserError, match="already exists: choose another OUT.gguf or pass --force"):
        export_gguf(lora_checkpoint, tmp_path / "model.gguf")
    assert (tmp_path / "model.gguf").read_bytes() == b"keep me"


def test_a_directory_is_never_replaced(lora_checkpoint: Checkpoint, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is a directory: name the file to write"):
        export_gguf(lora_checkpoint, tmp_path, force=True)


def test_an_unknown_tensor_type_is_one_line(lora_checkpoint: Checkpoint, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--gguf-type must be one of f32, f16, q8_0, not 'q4_0'"):
        export_gguf(lora_checkpoint, tmp_path / "model.gguf", tensor_type="q4_0")


def test_a_char_model_is_refused_in_one_line_saying_why(tmp_path: Path) -> None:
    chars = "\n !abcdefghijklmnopqrstuvwxyz"
    config = tiny_config(vocab_size=len(chars))
    tokenizer = {"kind": "char", "chars": chars}
    checkpoint = Checkpoint(model_args=config, model=GPT(config).state_dict(), tokenizer=tokenizer)
    with pytest.raises(UserError, match="GGUF export does not take character-level models .* end-of-text token"):
        export_gguf(checkpoint, tmp_path / "model.gguf")
    assert not (tmp_path / "model.gguf").exists()


@pytest.fixture(scope="module")
def bpe_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Checkpoint, Path]:
    """A trained Qwen3 over a BPE of 300 ids trained by `prepare --tokenizer bpe:300`'s code, and its f32 GGUF."""
    tokenizer = train_bpe([TRAINING_TEXT * 8, "Once upon a midnight dreary, while I pondered, weak and weary."], 300)
    config = tiny_config(vocab_size=320, n_embd=64, bias=False, arch="qwen3")
    model = trained_tiny_model(config, tokenizer.encode(TRAINING_TEXT * 2), steps=40)
    checkpoint = Checkpoint(model_args=config, model=model.state_dict(), tokenizer=tokenizer.description())
    return checkpoint, export_gguf(checkpoint, tmp_path_factory.mktemp("bpe") / "bpe.gguf", tensor_type="f32").path


def test_qwen3_is_written_as_llama_cpps_qwen3(bpe_model: tuple[Checkpoint, Path]) -> None:
    contents = read_gguf(bpe_model[1])
    keys = contents.keys
    assert keys["general.architecture"] == "qwen3"
    assert (keys["qwen3.attention.head_count"], keys["qwen3.attention.head_count_kv"]) == (2, 2)
    assert (keys["qwen3.attention.key_length"], keys["qwen3.embedding_length"]) == (32, 64)
    assert keys["qwen3.feed_forward_length"] == 192  # SwiGLU: 8/3 of the width, rounded up to 64
    assert keys["qwen3.rope.freq_base"] == 10000.0
    assert keys["qwen3.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6)
    assert {"output.weight", "blk.1.attn_q_norm.weight", "blk.1.attn_k_norm.weight"} <= contents.tensors.keys()
    assert not any(name.endswith(".bias") for name in contents.tensors)  # Qwen3 has none
    assert contents.tensors["output.weight"][0] == [64, keys["tokenizer.ggml.tokens"].__len__()]  # untied, cut


def test_a_trained_bpe_is_written_with_its_own_tokens_merges_and_end_of_text(
    bpe_model: tuple[Checkpoint, Path],
) -> None:
    checkpoint, path = bpe_model
    tokenizer = tokenizer_from_checkpoint(checkpoint)
    keys = read_gguf(path).keys
    assert (keys["tokenizer.ggml.model"], keys["tokenizer.ggml.pre"]) == ("gpt2", "gpt-2")
    assert len(keys["tokenizer.ggml.tokens"]) == tokenizer.vocab_size < 320  # cut to the tokenizer, not the model
    assert keys["tokenizer.ggml.tokens"][0] == "<|endoftext|>" and keys["tokenizer.ggml.token_type"][0] == 3
    assert keys["tokenizer.ggml.eos_token_id"] == tokenizer.eot_id == 0
    assert len(keys["tokenizer.ggml.merges"]) == tokenizer.vocab_size - 257  # 256 bytes and <|endoftext|> unmerged


def test_a_refused_write_is_one_line_and_leaves_nothing(
    lora_checkpoint: Checkpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(path: Path, mode: str = "wb", encoding: Any = None) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(files, "open_for_writing", full_disk)
    with pytest.raises(UserError, match=f"no space left on device writing {tmp_path / 'model.gguf'}"):
        export_gguf(lora_checkpoint, tmp_path / "model.gguf")
    assert list(tmp_path.iterdir()) == []


# --- llama.cpp itself ------------------------------------------------------------------------------------------


def hellogpt_greedy(checkpoint: Checkpoint, prompt_ids: list[int]) -> list[int]:
    model = model_from_checkpoint(checkpoint)
    vocab_size = checkpoint_tokenizer(checkpoint, checkpoint.model_args.vocab_size).vocab_size
    return list(stream_tokens(model, prompt_ids, max_new_tokens=GREEDY_TOKENS, temperature=0.0, vocab_size=vocab_size))


def llama_cpp_greedy(path: Path, prompt_ids: list[int]) -> list[int]:
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama.cpp's Python binding: pip install llama-cpp-python")
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=CONTEXT, verbose=False)
    produced: list[int] = []
    for token in llm.generate(prompt_ids, temp=0.0, repeat_penalty=1.0):
        produced.append(token)
        if len(produced) == GREEDY_TOKENS:
            break
    return produced


@pytest.fixture(scope="module")
def prompt_and_reference(lora_checkpoint: Checkpoint) -> tuple[list[int], list[int]]:
    prompt_ids = tokenizer_from_checkpoint(lora_checkpoint).encode(PROMPT)
    return prompt_ids, hellogpt_greedy(lora_checkpoint, prompt_ids)


def test_llama_cpp_decodes_the_f32_gguf_greedily_to_hellogpts_exact_tokens(
    gguf_f32: Path, prompt_and_reference: tuple[list[int], list[int]]
) -> None:
    prompt_ids, ours = prompt_and_reference
    assert len(ours) == GREEDY_TOKENS
    assert llama_cpp_greedy(gguf_f32, prompt_ids) == ours


def test_llama_cpp_decodes_a_qwen3_gguf_greedily_to_hellogpts_exact_tokens(bpe_model: tuple[Checkpoint, Path]) -> None:
    checkpoint, path = bpe_model
    prompt_ids = tokenizer_from_checkpoint(checkpoint).encode(PROMPT)
    ours = hellogpt_greedy(checkpoint, prompt_ids)
    assert len(ours) == GREEDY_TOKENS
    assert llama_cpp_greedy(path, prompt_ids) == ours


TOKENIZED_TEXT = "Hello world! Once upon a midnight dreary, 1234 times:\n\tnaïve café ☕  <|im_end|>'s  end"


def llama_cpp_tokens(path: Path, text: str) -> list[int]:
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama.cpp's Python binding: pip install llama-cpp-python")
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=CONTEXT, vocab_only=True, verbose=False)
    return llm.tokenize(text.encode("utf-8"), add_bos=False)


def test_llama_cpp_tokenizes_text_as_hellogpt_does(gguf_f32: Path, lora_checkpoint: Checkpoint) -> None:
    ours = tokenizer_from_checkpoint(lora_checkpoint).encode(TOKENIZED_TEXT)
    assert llama_cpp_tokens(gguf_f32, TOKENIZED_TEXT) == ours


def test_llama_cpp_tokenizes_text_with_a_trained_bpe_as_hellogpt_does(bpe_model: tuple[Checkpoint, Path]) -> None:
    checkpoint, path = bpe_model
    assert llama_cpp_tokens(path, TOKENIZED_TEXT) == tokenizer_from_checkpoint(checkpoint).encode(TOKENIZED_TEXT)


def test_llama_cpp_agrees_with_hellogpt_on_most_greedy_tokens_of_the_q8_0_gguf(
    gguf_q8: Path, prompt_and_reference: tuple[list[int], list[int]]
) -> None:
    prompt_ids, ours = prompt_and_reference
    theirs = llama_cpp_greedy(gguf_q8, prompt_ids)
    agreeing = sum(mine == other for mine, other in zip(ours, theirs)) / GREEDY_TOKENS
    assert agreeing >= 0.75, f"q8_0 agrees on {agreeing:.0%} of {GREEDY_TOKENS} greedy tokens"
