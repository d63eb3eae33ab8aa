"""`hellogpt export CHECKPOINT OUT.gguf`'s core: one of our checkpoints as a GGUF file that llama.cpp runs.

Written with the `gguf` package (llama.cpp's own Python writer) the way llama.cpp's convert_hf_to_gguf.py writes
the same model from a transformers directory: the architecture's keys, the tokenizer (GPT-2 byte-level BPE with its
merges), the chat template, and the tensors under llama.cpp's names, so that llama.cpp, Ollama and LM Studio load it
as one of their own. The file is written to a temporary name beside OUT and renamed when complete.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np
import torch

from hellogpt import files
from hellogpt.checkpoints.format import Checkpoint
from hellogpt.checkpoints.loading import checkpoint_tokenizer, model_from_checkpoint
from hellogpt.data.chat_template import TURN_END
from hellogpt.errors import UserError

if TYPE_CHECKING:
    from hellogpt.data.tokenizer import Tokenizer

GGUF_SUFFIX = ".gguf"
# The tensor types `--gguf-type` offers; llama.cpp's converter writes f16 by default ("auto" for fp32 weights).
GGUF_TENSOR_TYPES = ("f32", "f16", "q8_0")
DEFAULT_GGUF_TENSOR_TYPE = "f16"
GGUF_ELSEWHERE = "choose another OUT.gguf"
INSTALL_GGUF = "pip install gguf"
# llama.cpp's name for GPT-2's pre-tokenizer (its split regex), as convert_hf_to_gguf.py records it for gpt2.
GPT2_PRE_TOKENIZER = "gpt-2"


@dataclass(frozen=True)
class GgufExport:
    """What `export_gguf` wrote, for the command to report."""

    path: Path
    architecture: str
    tensor_type: str
    vocab_size: int
    size_bytes: int
    has_chat_template: bool


@dataclass(frozen=True)
class GgufVocabulary:
    """A tokenizer as llama.cpp's byte-level BPE ("gpt2" tokenizer model) reads it."""

    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    end_of_text_id: int
    end_of_turn_id: Optional[int]


def export_gguf(
    checkpoint: Checkpoint,
    out_path: Path,
    *,
    tensor_type: str = DEFAULT_GGUF_TENSOR_TYPE,
    force: bool = False,
    name: Optional[str] = None,
) -> GgufExport:
    """Write `checkpoint` (a LoRA one merged into its base first) as one GGUF file at `out_path`.

    `tensor_type` is f32, f16 or q8_0 for the matrices (norms, biases and position embeddings stay f32, as
    llama.cpp's converter keeps them); the embedding is cut to the tokenizer's rows (our padding is never a
    target). `force` replaces an existing file; a directory or a symbolic link is never replaced.
    """
    out_path = Path(out_path)
    gguf = _import_gguf()
    if tensor_type not in GGUF_TENSOR_TYPES:
        raise UserError(f"--gguf-type must be one of {', '.join(GGUF_TENSOR_TYPES)}, not {tensor_type!r}")
    _check_replaceable(out_path, force)
    vocabulary = gguf_vocabulary(checkpoint_tokenizer(checkpoint, checkpoint.model_args.vocab_size))
    model = model_from_checkpoint(checkpoint)
    architecture = GGUF_ARCHITECTURES[getattr(model.config, "arch", "gpt2")]
    writer = gguf.GGUFWriter(None, architecture.name)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name or out_path.stem)
    architecture.add_hyperparameters(writer, model)
    writer.add_file_type(_file_type(tensor_type))
    _add_vocabulary(writer, vocabulary)
    if checkpoint.chat_template:
        writer.add_chat_template(checkpoint.chat_template)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for tensor_name, array in _tensors(model, architecture, len(vocabulary.tokens)):
        stored, qtype = encode_tensor(array, tensor_name, tensor_type)
        writer.add_tensor(tensor_name, stored, raw_dtype=qtype)
    _write_file(writer, out_path)
    return GgufExport(
        path=out_path, architecture=architecture.name, tensor_type=tensor_type, vocab_size=len(vocabulary.tokens),
        size_bytes=out_path.stat().st_size, has_chat_template=bool(checkpoint.chat_template),
    )


def _import_gguf() -> Any:
    try:
        import gguf
    except ImportError:
        raise UserError(f"writing GGUF needs the gguf package (llama.cpp's writer): {INSTALL_GGUF}") from None
    return gguf


def _check_replaceable(out_path: Path, force: bool) -> None:
    """Refuse a directory, a symbolic link, and (without --force) any existing file."""
    if out_path.is_symlink():
        raise UserError(f"{out_path} is a symbolic link: --force replaces only real files; {GGUF_ELSEWHERE}")
    if out_path.is_dir():
        raise UserError(f"{out_path} is a directory: name the file to write, e.g. {out_path / 'model.gguf'}")
    if out_path.exists() and not force:
        raise UserError(f"{out_path} already exists: {GGUF_ELSEWHERE} or pass --force to replace it")


def gguf_vocabulary(tokenizer: "Tokenizer") -> GgufVocabulary:
    """A byte-level BPE (GPT-2's, or one `prepare --tokenizer bpe:N` trained) as llama.cpp reads it, from the
    tokenizer.json it is (`to_hf_json`); UserError for a tokenizer llama.cpp cannot run as it is."""
    if tokenizer.name == "char":
        raise UserError(
            "GGUF export does not take character-level models (llama.cpp has no character tokenizer, and a char "
            "vocabulary has no end-of-text token for it to stop at): export it to transformers instead "
            "(hellogpt export CHECKPOINT OUT_DIR)"
        )
    document = json.loads(tokenizer.to_hf_json())
    model, pre_tokenizer = document["model"], document.get("pre_tokenizer") or {}
    if model.get("type") != "BPE" or pre_tokenizer.get("type") != "ByteLevel" or not pre_tokenizer.get("use_regex"):
        raise UserError(f"GGUF export takes byte-level BPE tokenizers (GPT-2's, bpe:N), not {tokenizer.name!r}")
    by_id = {token_id: token for token, token_id in model["vocab"].items()}
    by_id.update({added["id"]: added["content"] for added in document.get("added_tokens", [])})
    if sorted(by_id) != list(range(tokenizer.vocab_size)) or tokenizer.eot_id is None:
        last = tokenizer.vocab_size - 1
        raise ValueError(f"the {tokenizer.name} tokenizer's tokenizer.json does not name ids 0..{last}")
    special_ids = set(tokenizer.special_tokens.values())
    control, normal = _token_type("CONTROL"), _token_type("NORMAL")
    return GgufVocabulary(
        tokens=[by_id[token_id] for token_id in range(tokenizer.vocab_size)],
        token_types=[control if token_id in special_ids else normal for token_id in range(tokenizer.vocab_size)],
        merges=[merge if isinstance(merge, str) else " ".join(merge) for merge in model["merges"]],
        end_of_text_id=tokenizer.eot_id,
        end_of_turn_id=tokenizer.special_tokens.get(TURN_END),
    )


def _token_type(name: str) -> int:
    import gguf

    return int(gguf.TokenType[name])


def _add_vocabulary(writer: Any, vocabulary: GgufVocabulary) -> None:
    """The tokenizer keys convert_hf_to_gguf.py writes for a GPT-2 tokenizer (tokens, types, merges, special ids;
    llama.cpp's "gpt2" tokenizer is byte-level BPE). No BOS is prepended: our models never saw one."""
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(GPT2_PRE_TOKENIZER)
    writer.add_token_list(vocabulary.tokens)
    writer.add_token_types(vocabulary.token_types)
    writer.add_token_merges(vocabulary.merges)
    writer.add_bos_token_id(vocabulary.end_of_text_id)
    writer.add_unk_token_id(vocabulary.end_of_text_id)
    if vocabulary.end_of_turn_id is None:
        writer.add_eos_token_id(vocabulary.end_of_text_id)
    else:  # a chat model's reply ends at <|im_end|>, as hellogpt chat and serve end it (Qwen's GGUFs say the same)
        writer.add_eos_token_id(vocabulary.end_of_turn_id)
        writer.add_eot_token_id(vocabulary.end_of_turn_id)
    writer.add_add_bos_token(False)


def _file_type(tensor_type: str) -> int:
    """llama.cpp's `general.file_type` for the matrices' type ("mostly": 1-D tensors stay f32)."""
    import gguf

    file_types = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "q8_0": "MOSTLY_Q8_0"}
    return int(gguf.LlamaFileType[file_types[tensor_type]])


def _add_block_hyperparameters(writer: Any, config: Any, feed_forward_length: int) -> None:
    """The `{arch}.*` keys every llama.cpp architecture reads: depth, context, widths and heads."""
    writer.add_block_count(config.n_layer)
    writer.add_context_length(config.block_size)
    writer.add_embedding_length(config.n_embd)
    writer.add_feed_forward_length(feed_forward_length)
    writer.add_head_count(config.n_head)


def _add_gpt2_hyperparameters(writer: Any, model: Any) -> None:
    """The `gpt2.*` keys llama.cpp reads (convert_hf_to_gguf.py's GPT2Model writes the same)."""
    _add_block_hyperparameters(writer, model.config, model.transformer.h[0].mlp.c_fc.out_features)
    writer.add_layer_norm_eps(model.transformer.ln_f.eps)


def _add_qwen3_hyperparameters(writer: Any, model: Any) -> None:
    """The `qwen3.*` keys llama.cpp reads (what convert_hf_to_gguf.py writes from a Qwen3Config): one key/value
    head per query head, rotary base, RMSNorm epsilon; llama.cpp's qwen3 rotates as transformers does (NeoX)."""
    from hellogpt.model.qwen3 import ROPE_THETA

    config = model.config
    _add_block_hyperparameters(writer, config, model.model.layers[0].mlp.gate_proj.out_features)
    writer.add_head_count_kv(config.n_head)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_rope_freq_base(ROPE_THETA)
    writer.add_layer_norm_rms_eps(model.model.norm.eps)


@dataclass(frozen=True)
class GgufArchitecture:
    """How one of our architectures is written: llama.cpp's name for it, its keys, and its tensors as one table
    (our module name -> gguf.MODEL_TENSOR), outside the blocks and within each (`block_prefix` + name)."""

    name: str
    add_hyperparameters: Callable[[Any, Any], None]
    top_tensors: dict[str, str]
    block_prefix: str
    block_tensors: dict[str, str]
    # llama.cpp's GPT-2 requires every bias: a model trained without them gets zeros (which change nothing).
    zero_biases: bool


GGUF_ARCHITECTURES = {
    "gpt2": GgufArchitecture(
        name="gpt2",
        add_hyperparameters=_add_gpt2_hyperparameters,
        top_tensors={"transformer.wte": "TOKEN_EMBD", "transformer.wpe": "POS_EMBD", "transformer.ln_f": "OUTPUT_NORM"},
        block_prefix="transformer.h.{block}.",
        block_tensors={
            "ln_1": "ATTN_NORM", "attn.c_attn": "ATTN_QKV", "attn.c_proj": "ATTN_OUT",
            "ln_2": "FFN_NORM", "mlp.c_fc": "FFN_UP", "mlp.c_proj": "FFN_DOWN",
        },
        zero_biases=True,
    ),
    "qwen3": GgufArchitecture(
        name="qwen3",
        add_hyperparameters=_add_qwen3_hyperparameters,
        top_tensors={"model.embed_tokens": "TOKEN_EMBD", "model.norm": "OUTPUT_NORM", "lm_head": "OUTPUT"},
        block_prefix="model.layers.{block}.",
        block_tensors={
            "input_layernorm": "ATTN_NORM", "self_attn.q_proj": "ATTN_Q", "self_attn.k_proj": "ATTN_K",
            "self_attn.v_proj": "ATTN_V", "self_attn.q_norm": "ATTN_Q_NORM", "self_attn.k_norm": "ATTN_K_NORM",
            "self_attn.o_proj": "ATTN_OUT", "post_attention_layernorm": "FFN_NORM", "mlp.gate_proj": "FFN_GATE",
            "mlp.up_proj": "FFN_UP", "mlp.down_proj": "FFN_DOWN",
        },
        zero_biases=False,
    ),
}


def _tensors(model: Any, architecture: GgufArchitecture, vocab_size: int) -> Iterator[tuple[str, np.ndarray]]:
    """Every parameter under its GGUF name, as float32 arrays shaped (out, in) as nn.Linear stores them (ggml's
    layout, so nothing is transposed); the vocabulary's rows cut to the tokenizer's. A head tied to the embedding
    is not written: llama.cpp then uses the token embedding, as transformers does."""
    import gguf

    state = model.state_dict()
    unwritten = set(state) - set(getattr(model, "tied_weights", {"lm_head.weight": "transformer.wte.weight"}))
    modules = [(prefix, kind, None) for prefix, kind in architecture.top_tensors.items()] + [
        (architecture.block_prefix.format(block=block) + part, kind, block)
        for block in range(model.config.n_layer)
        for part, kind in architecture.block_tensors.items()
    ]
    for prefix, kind, block in modules:
        base_name = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR[kind]].format(bid=block)
        weight = state[f"{prefix}.weight"]
        unwritten.discard(f"{prefix}.weight")
        yield f"{base_name}.weight", _array(weight[:vocab_size] if kind in ("TOKEN_EMBD", "OUTPUT") else weight)
        bias = state.get(f"{prefix}.bias")
        unwritten.discard(f"{prefix}.bias")
        if bias is not None:
            yield f"{base_name}.bias", _array(bias)
        elif architecture.zero_biases and kind not in ("TOKEN_EMBD", "POS_EMBD"):
            yield f"{base_name}.bias", np.zeros(weight.shape[0], dtype=np.float32)
    if unwritten:
        raise ValueError(f"the {architecture.name} GGUF table has no place for {sorted(unwritten)}")


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()


def encode_tensor(array: np.ndarray, tensor_name: str, tensor_type: str) -> tuple[np.ndarray, Any]:
    """The array in the type llama.cpp's converter gives it: 1-D tensors, norms and position embeddings f32, the
    other matrices `tensor_type`; a matrix whose rows q8_0's 32-value blocks do not divide falls back to f16."""
    import gguf
    from gguf.quants import quantize

    kept_f32 = array.ndim <= 1 or tensor_name.startswith(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.POS_EMBD])
    qtype = gguf.GGMLQuantizationType.F32 if kept_f32 else gguf.GGMLQuantizationType[tensor_type.upper()]
    try:
        return quantize(array, qtype), qtype
    except gguf.QuantError:
        return quantize(array, gguf.GGMLQuantizationType.F16), gguf.GGMLQuantizationType.F16


def _write_file(writer: Any, out_path: Path) -> None:
    """Header, keys and tensors into a temporary file beside `out_path`, renamed onto it once complete.

    The writer is handed our open file instead of opening the path itself (what its `open_output_file` does),
    so a failed write is reported like every other (`hellogpt.files`) and never leaves half a file."""
    from gguf import WriterState

    with files.atomic_file(out_path, "wb", elsewhere=GGUF_ELSEWHERE) as file:
        writer.fout = [file]
        writer.state = WriterState.EMPTY
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.fout = None
