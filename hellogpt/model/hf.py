"""Hugging Face GPT-2 <-> ours: load a transformers GPT-2 into our `GPT`, write ours back as transformers' files.

The model half only: `hellogpt/export.py` builds the export directory around `write_hf_model` and adds the
tokenizer's files, so that this layer stays pure torch (plus transformers' config class).

transformers stores GPT-2's linear layers as `Conv1D` (weight shaped in x out), ours are `nn.Linear`
(out x in): those four weights are transposed on the way in and out, every other tensor keeps its
name and shape. transformers is imported inside the functions only (it takes seconds to import).
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, ContextManager, Iterable, Iterator, Optional

import torch

from hellogpt.errors import UserError
from hellogpt.gpt2 import GPT2_VOCAB_SIZE
from hellogpt.model.architectures import build_model
from hellogpt.model.base import CausalLM
from hellogpt.model.gpt import GPT, GPTConfig
from hellogpt.model.hf_qwen3 import qwen3_config_from_hf, qwen3_config_json, qwen3_hf_tensors
from hellogpt.model.lora import WeightsDigest, frozen_storage_dtype

GPT2_HUB_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
# The GPT-2 linear layers transformers keeps as Conv1D (weights stored transposed).
CONV1D_WEIGHT_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Causal-mask buffers older transformers versions store with the weights; we build the mask ourselves.
ATTENTION_MASK_SUFFIXES = (".attn.bias", ".attn.masked_bias")
# GPT-2's tanh-approximated GELU under its transformers names; ours is F.gelu(approximate="tanh").
TANH_GELU_NAMES = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
GPT2_LAYER_NORM_EPSILON = 1e-5
_HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# The tokenizer's description (`Tokenizer.description()`), written by `hellogpt export` beside tokenizer.json, so that
# `--from DIR` rebuilds the very tokenizer the model was trained with (a trained BPE, characters, chat markers).
TOKENIZER_DESCRIPTION_FILE = "hellogpt_tokenizer.json"
# The same description under the name character-level exports had before every export carried one.
CHAR_VOCABULARY_FILE = "hellogpt_char_vocab.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
HF_CONFIG_FILE = "config.json"
# The config.json key that points transformers at Python files shipped with the model (trust_remote_code).
REMOTE_CODE_KEY = "auto_map"
WEIGHTS_FILE = "model.safetensors"
# Where a model directory or hub repository keeps its weights, in the order they are looked for.
WEIGHT_FILE_CANDIDATES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
)
SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}
# safetensors pads its header so that the tensor data starts 8-byte aligned.
SAFETENSORS_ALIGNMENT = 8
# The largest header the safetensors package itself reads (its N_MAX_HEADER); anything bigger is damage.
SAFETENSORS_MAX_HEADER_BYTES = 100_000_000
SAFETENSORS_METADATA_KEY = "__metadata__"


def is_huggingface_source(spec: str) -> bool:
    """True for gpt2[-medium|-large|-xl], an `owner/name` hub id, or a local transformers model directory."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return (path / "config.json").is_file()
    if path.exists() or spec.endswith(".pt"):
        return False
    return spec in GPT2_HUB_NAMES or bool(_HUB_ID_PATTERN.match(spec))


def load_pretrained(
    spec: str, *, matrix_dtype: torch.dtype = torch.float32, digest: Optional[WeightsDigest] = None
) -> tuple[CausalLM, dict[str, Any]]:
    """Load a transformers GPT-2, or a Qwen3 of the shape we export (hub name, hub id or local directory), as our
    model on the CPU.

    The weight files are read tensor by tensor (never memory-mapped, never through transformers' model) and
    each tensor is converted straight into its place: besides the model itself, at most one layer's tensor is
    alive. The blocks' matrices are held in `matrix_dtype` (a frozen LoRA base in bf16), the rest in fp32.
    `digest`, when given, sees every tensor as stored in the files (the fingerprint of a LoRA base).
    """
    source = _transformers_source(spec)
    config = _gpt_config_from_hf(_load_hf_config(spec, source), spec)
    tensors = _read_weight_files(_weight_files(spec, source), spec)
    converted = _convert_hf_tensors(tensors, config, spec, matrix_dtype, digest)
    with torch.device("meta"):
        model = build_model(config)
    model.load_state_dict(converted, strict=True, assign=True)
    # Assigning replaced the tied Parameter with two separate ones: tie them again (and build derived tables).
    model.finish_loading()
    model.eval()
    # A local directory is recorded absolute, so the origin still names it when read from elsewhere.
    recorded_source = str(Path(source).resolve()) if Path(source).is_dir() else spec
    return model, {"kind": "huggingface", "source": recorded_source}


def pretrained_architecture(spec: str) -> GPTConfig:
    """The architecture of a transformers GPT-2, from its config alone (no weights read)."""
    return _gpt_config_from_hf(_load_hf_config(spec, _transformers_source(spec)), spec)


def pretrained_tokenizer(spec: str) -> tuple[dict[str, Any], Optional[str]]:
    """The tokenizer description and chat template of a model that `--from` names: what our export recorded
    (TOKENIZER_DESCRIPTION_FILE, and tokenizer_config.json's chat_template), else GPT-2's BPE, every GPT-2's."""
    description_file = _tokenizer_description_file(spec)
    if description_file is None:
        return {"kind": "gpt2"}, None
    description = _read_json_object(description_file)
    config_file = description_file.parent / TOKENIZER_CONFIG_FILE
    template = _read_json_object(config_file).get("chat_template") if config_file.is_file() else None
    return description, template if isinstance(template, str) else None


def _tokenizer_description_file(spec: str) -> Optional[Path]:
    path = Path(spec).expanduser()
    if not path.is_dir():
        return None
    for name in (TOKENIZER_DESCRIPTION_FILE, CHAR_VOCABULARY_FILE):
        if (path / name).is_file():
            return path / name
    return None


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"cannot read {path} ({error}): export the model again") from None
    if not isinstance(value, dict):
        raise UserError(f"{path} is not a JSON object: export the model again")
    return value


def _transformers_source(spec: str) -> str:
    """What transformers' from_pretrained gets: an existing directory as a path, anything else as a hub id."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"{path} has no config.json: pass a directory written by save_pretrained or hellogpt export")
        return str(path)
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise UserError(f"{spec} does not exist: pass gpt2, gpt2-medium, gpt2-large, gpt2-xl, a hub id or a model directory")
    return spec


def _load_hf_config(spec: str, source: str) -> Any:
    """transformers' config of a model that ships no code of its own (checked here first, so transformers never
    prompts for it, let alone runs it)."""
    _refuse_remote_code(spec, source)
    from transformers import AutoConfig

    def load_config(source: str, **options: Any) -> Any:
        return AutoConfig.from_pretrained(source, trust_remote_code=False, **options)

    try:
        return _cache_first(load_config, source)
    except (OSError, ValueError) as error:
        raise _load_error(spec, error) from None


def _refuse_remote_code(spec: str, source: str) -> None:
    """UserError for a model whose config.json maps its classes onto its own Python files (`auto_map`):
    loading it would mean running code from the model's folder or repository."""
    config_path = _model_file(spec, source, HF_CONFIG_FILE)
    if config_path is None:
        return  # transformers says what is missing
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        raise UserError(f"'{spec}': {config_path} is not a readable JSON file: download the model again") from None
    if isinstance(config, dict) and REMOTE_CODE_KEY in config:
        raise UserError(
            f"'{spec}' ships its own Python code ({REMOTE_CODE_KEY} in {config_path}), which hellogpt never runs: "
            "pass a plain GPT-2 model (gpt2, or a folder written by save_pretrained without custom code)"
        )


def _weight_files(spec: str, source: str) -> list[Path]:
    """The weight files of a model directory or hub repository: safetensors first, sharded or not, then .bin."""
    for name in WEIGHT_FILE_CANDIDATES:
        path = _model_file(spec, source, name)
        if path is None:
            continue
        if not name.endswith(".index.json"):
            return [path]
        try:
            shard_names = sorted(set(json.loads(path.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise UserError(f"'{spec}': {path} is not a readable weight index; download the model again") from None
        shards = [_model_file(spec, source, shard) for shard in shard_names]
        missing = [shard for shard, found in zip(shard_names, shards) if found is None]
        if missing:
            raise UserError(f"'{spec}' lacks the weight file {missing[0]} that {name} lists; download the model again")
        return [shard for shard in shards if shard is not None]
    raise UserError(
        f"'{spec}' has no weights ({', '.join(WEIGHT_FILE_CANDIDATES)}): pass a directory written by save_pretrained"
    )


def _model_file(spec: str, source: str, name: str) -> Optional[Path]:
    """One file of a local directory or of a hub repository (the local cache first); None when it has none."""
    if Path(source).is_dir():
        path = Path(source) / name
        return path if path.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return Path(_cache_first(lambda repo, **options: hf_hub_download(repo, name, **options), source))
    except EntryNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise _load_error(spec, error) from None


def _read_weight_files(paths: list[Path], spec: str) -> Iterator[tuple[str, torch.Tensor]]:
    for path in paths:
        if path.suffix == ".safetensors":
            yield from _read_safetensors(path, spec)
        else:
            yield from _read_torch_weights(path, spec)


def _read_safetensors(path: Path, spec: str) -> Iterator[tuple[str, torch.Tensor]]:
    """Each tensor of a safetensors file, read into its own fresh buffer with plain reads: a memory map of a
    6 GB file would count every page it touched as resident until the end of the conversion.

    The whole header is checked against the file's size before anything is allocated (a damaged or hostile file
    must not make us read or allocate what the file does not hold); the tensors' bytes are then read in file order.
    """
    try:
        with open(path, "rb") as file:
            data_start, entries = _safetensors_layout(file, os.fstat(file.fileno()).st_size)
            for entry in entries:
                tensor = torch.empty(entry.shape, dtype=entry.dtype)
                file.seek(data_start + entry.begin)
                if tensor.numel() and file.readinto(memoryview(tensor.reshape(-1).view(torch.uint8).numpy())) != entry.size:
                    raise ValueError(f"{entry.name} is cut short")
                yield entry.name, tensor
    except (OSError, ValueError, RecursionError) as error:
        raise UserError(
            f"'{spec}': {path} is not a readable safetensors file ({' '.join(str(error).split())[:100]}): "
            "download the model again"
        ) from None


@dataclass(frozen=True)
class _SafetensorsEntry:
    """One tensor as a safetensors header describes it, its bytes at [begin, begin + size) of the data area."""

    name: str
    dtype: torch.dtype
    shape: list[int]
    begin: int
    size: int


def _safetensors_layout(file: IO[bytes], file_size: int) -> tuple[int, list[_SafetensorsEntry]]:
    """Where the data area starts and every tensor in file order, checked against `file_size`: a known dtype, a
    shape of non-negative ints whose bytes fill its offsets exactly, and byte ranges inside the data area that do
    not overlap (so that reading all of them allocates at most the file's own size). ValueError names the fault."""
    prefix = file.read(8)
    if len(prefix) < 8:
        raise ValueError(f"{file_size} bytes, shorter than the 8-byte header length")
    (header_size,) = struct.unpack("<Q", prefix)
    data_size = file_size - 8 - header_size
    if header_size > SAFETENSORS_MAX_HEADER_BYTES or data_size < 0:
        raise ValueError(f"a header of {header_size} bytes in a file of {file_size}")
    header = json.loads(file.read(header_size))
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    entries = [
        _safetensors_entry(name, entry, data_size) for name, entry in header.items() if name != SAFETENSORS_METADATA_KEY
    ]
    entries.sort(key=lambda entry: entry.begin)
    for previous, entry in zip(entries, entries[1:]):
        if entry.begin < previous.begin + previous.size:
            raise ValueError(f"{previous.name} and {entry.name} overlap")
    return 8 + header_size, entries


def _safetensors_entry(name: str, entry: Any, data_size: int) -> _SafetensorsEntry:
    """One header entry checked: every value is of the kind the format names, and inside the data area."""
    if not isinstance(entry, dict) or not isinstance(entry.get("dtype"), str) or entry["dtype"] not in SAFETENSORS_DTYPES:
        raise ValueError(f"{name} has no known dtype")
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    # Dimensions multiply (zeros left out) to at most the data area's bytes: true of every tensor with data, and it
    # keeps an empty tensor's strides from overflowing.
    if not isinstance(shape, list) or not all(_is_count(size) for size in shape) or math.prod(filter(None, shape)) > data_size:
        raise ValueError(f"{name} has shape {shape!r}")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(offset) for offset in offsets):
        raise ValueError(f"{name} has data_offsets {offsets!r}")
    begin, end = offsets
    if not begin <= end <= data_size:
        raise ValueError(f"{name} lies at bytes {begin}-{end} of a data area of {data_size}")
    dtype = SAFETENSORS_DTYPES[entry["dtype"]]
    if math.prod(shape) * dtype.itemsize != end - begin:
        raise ValueError(f"{name} holds {end - begin} bytes for shape {shape}")
    return _SafetensorsEntry(name, dtype, shape, begin, end - begin)


def _is_count(value: Any) -> bool:
    """A non-negative int as JSON gives it (not a bool, a float or a string)."""
    return type(value) is int and value >= 0


def _read_torch_weights(path: Path, spec: str) -> Iterator[tuple[str, torch.Tensor]]:
    """An old pytorch_model.bin, memory-mapped and read safely (no code runs)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # torch.load's failures on damaged files have no common type
        raise UserError(f"'{spec}': {path} is not a readable weight file ({type(error).__name__}): download the model again") from None
    for name in list(state):
        yield name, state.pop(name)


def _cache_first(from_pretrained: Any, source: str) -> Any:
    """The local cache first, then the hub: offline, a cached model loads at once instead of after the hub's retries."""
    try:
        return from_pretrained(source, local_files_only=True)
    except (OSError, ValueError):
        return from_pretrained(source)


def _load_error(spec: str, error: Exception) -> UserError:
    """One line for a model transformers could not load: offline/no cache gets the local-directory advice."""
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if "connect" in first_line.lower() or "offline" in first_line.lower() or "cached files" in first_line.lower():
        return UserError(
            f"cannot load Hugging Face model '{spec}': the hub cannot be reached and it is not in the local cache "
            "(HF_HOME); connect once to download it, or pass a local directory: --from path/to/dir"
        )
    return UserError(f"cannot load Hugging Face model '{spec}': {first_line}")


def _gpt_config_from_hf(hf_config: Any, spec: str) -> GPTConfig:
    """Our architecture for a transformers GPT-2 config; UserError for anything our GPT cannot reproduce."""
    model_type = getattr(hf_config, "model_type", None)
    if model_type == "qwen3":
        qwen3, unsupported_qwen3 = qwen3_config_from_hf(hf_config)
        if qwen3 is None:
            raise UserError(
                f"'{spec}' uses Qwen3 settings hellogpt's qwen3 does not have: {', '.join(unsupported_qwen3)} "
                "(hellogpt loads the Qwen3 models it exports)"
            )
        return qwen3
    if model_type != "gpt2":
        raise UserError(
            f"'{spec}' is a {model_type} model, not GPT-2: hellogpt loads GPT-2 models and the Qwen3 models it exports"
        )
    unsupported = []
    if hf_config.activation_function not in TANH_GELU_NAMES:
        unsupported.append(f"activation_function={hf_config.activation_function}")
    if hf_config.n_inner not in (None, 4 * hf_config.n_embd):
        unsupported.append(f"n_inner={hf_config.n_inner}")
    if abs(hf_config.layer_norm_epsilon - GPT2_LAYER_NORM_EPSILON) > 1e-12:
        unsupported.append(f"layer_norm_epsilon={hf_config.layer_norm_epsilon}")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention"):
        if getattr(hf_config, flag, False):
            unsupported.append(f"{flag}=true")
    if not getattr(hf_config, "scale_attn_weights", True):
        unsupported.append("scale_attn_weights=false")
    if not getattr(hf_config, "tie_word_embeddings", True):
        unsupported.append("tie_word_embeddings=false")
    if unsupported:
        raise UserError(f"'{spec}' uses GPT-2 variants hellogpt's model does not have: {', '.join(unsupported)}")
    if hf_config.vocab_size < GPT2_VOCAB_SIZE and _tokenizer_description_file(spec) is None:
        raise UserError(
            f"'{spec}' has {hf_config.vocab_size} tokens; hellogpt reads Hugging Face models with the GPT-2 "
            f"tokenizer ({GPT2_VOCAB_SIZE} tokens)"
        )
    return GPTConfig(
        n_layer=hf_config.n_layer,
        n_head=hf_config.n_head,
        n_embd=hf_config.n_embd,
        block_size=hf_config.n_positions,
        vocab_size=hf_config.vocab_size,
        dropout=0.0,
        bias=True,
        arch="gpt2",
    )


def _convert_hf_state_dict(hf_state: dict[str, torch.Tensor], config: GPTConfig, spec: str) -> dict[str, torch.Tensor]:
    """A whole transformers state dict converted (popped tensor by tensor, so each copy replaces its original)."""

    def popped() -> Iterator[tuple[str, torch.Tensor]]:
        for name in list(hf_state):
            yield name, hf_state.pop(name)

    return _convert_hf_tensors(popped(), config, spec, torch.float32, None)


def _convert_hf_tensors(
    tensors: Iterable[tuple[str, torch.Tensor]],
    config: GPTConfig,
    spec: str,
    matrix_dtype: torch.dtype,
    digest: Optional[WeightsDigest],
) -> dict[str, torch.Tensor]:
    """Rename-free conversion as tensors stream in: transpose the Conv1D weights, drop mask buffers, cast to the
    target dtype, check every key and shape. Only the tensor in hand exists besides the converted ones."""
    with torch.device("meta"):
        model = build_model(config)
    expected_shapes = {name: tensor.shape for name, tensor in model.state_dict().items()}
    for tied in model.tied_weights:
        expected_shapes.pop(tied)  # GPT-2's head is transformer.wte.weight
    converted: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for stored_name, tensor in tensors:
        # Repositories saved from GPT2Model (the original gpt2 ones) lack the `transformer.` prefix.
        prefixed = stored_name.startswith(("transformer.", "lm_head.", "model.")) or config.arch != "gpt2"
        name = stored_name if prefixed else f"transformer.{stored_name}"
        if name in model.tied_weights or name.endswith(ATTENTION_MASK_SUFFIXES):
            continue
        if name not in expected_shapes:
            unexpected.append(name)
            continue
        if digest is not None:
            digest.update(name, tensor)
        if name.endswith(CONV1D_WEIGHT_SUFFIXES):
            tensor = tensor.t()
        tensor = tensor.to(frozen_storage_dtype(name, tensor.dim(), matrix_dtype)).contiguous()
        if tensor.shape != expected_shapes[name]:
            raise UserError(
                f"'{spec}': {name} has shape {tuple(tensor.shape)}, expected {tuple(expected_shapes[name])}"
            )
        converted[name] = tensor
    missing = sorted(set(expected_shapes) - set(converted))
    if missing or unexpected:
        raise UserError(
            f"'{spec}' does not match the {config.arch} layout: missing keys {_short_list(missing)}, "
            f"unexpected keys {_short_list(sorted(unexpected))}"
        )
    for tied, source in model.tied_weights.items():
        converted[tied] = converted[source]
    return converted


def _short_list(names: list[str], limit: int = 6) -> str:
    if not names:
        return "none"
    shown = ", ".join(names[:limit])
    return f"{shown} (and {len(names) - limit} more)" if len(names) > limit else shown


def write_hf_model(
    open_file: Callable[..., ContextManager[IO[Any]]], state: dict[str, torch.Tensor], config: GPTConfig,
    vocab_size: int, eot_id: Optional[int],
) -> None:
    """The model half of an export: config.json and model.safetensors, each written to `open_file(name, mode, encoding)`.

    `vocab_size` may cut the embedding to the tokenizer's rows (our 50304 padding is never a target); `eot_id` is the
    end-of-text id transformers records as bos/eos (None for a tokenizer without one).
    """
    qwen3 = config.arch == "qwen3"
    with open_file(HF_CONFIG_FILE, "w", encoding="utf-8") as file:
        file.write(qwen3_config_json(config, vocab_size, eot_id) if qwen3 else _hf_config_json(config, vocab_size, eot_id))
    try:
        tensors = dict(qwen3_hf_tensors(state, config, vocab_size) if qwen3 else _hf_tensors(state, config, vocab_size))
    except KeyError as missing:
        raise UserError(f"the checkpoint's weights lack {missing}: it is not a complete hellogpt model") from None
    with open_file(WEIGHTS_FILE, "wb") as file:
        _stream_safetensors(file, tensors, metadata={"format": "pt"})


def _hf_config_json(config: GPTConfig, vocab_size: int, eot_id: Optional[int]) -> str:
    """config.json as transformers' save_pretrained writes it (the differences from GPT-2's defaults)."""
    from transformers import GPT2Config

    hf_config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=config.block_size,
        # GPT-2's published config carries the context length twice; llama.cpp's convert_hf_to_gguf.py reads n_ctx.
        n_ctx=config.block_size,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        activation_function="gelu_new",
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        layer_norm_epsilon=GPT2_LAYER_NORM_EPSILON,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
        tie_word_embeddings=True,
    )
    hf_config.architectures = ["GPT2LMHeadModel"]
    if hasattr(hf_config, "validate"):
        hf_config.validate()
    return hf_config.to_json_string(use_diff=True)


def _stream_safetensors(file: IO[bytes], tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """The safetensors format written tensor by tensor into an open file (the safetensors package writes only to a
    path, or builds the whole file in memory): an 8-byte little-endian header length, a JSON header of dtypes,
    shapes and byte offsets padded with spaces, then each float32 tensor's little-endian bytes."""
    header: dict[str, Any] = {SAFETENSORS_METADATA_KEY: metadata}
    offset = 0
    for name, tensor in tensors.items():
        if tensor.dtype != torch.float32:
            raise ValueError(f"{name} is {tensor.dtype}; the export writes float32 tensors only")
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": "F32", "shape": list(tensor.shape), "data_offsets": [offset, offset + size]}
        offset += size
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % SAFETENSORS_ALIGNMENT)
    file.write(struct.pack("<Q", len(header_bytes)))
    file.write(header_bytes)
    for tensor in tensors.values():
        little_endian = tensor.detach().cpu().contiguous().numpy().astype("<f4", copy=False)
        file.write(memoryview(little_endian).cast("B"))


def _hf_tensors(state: dict[str, torch.Tensor], config: GPTConfig, vocab_size: int) -> Iterator[tuple[str, torch.Tensor]]:
    with torch.device("meta"):
        expected = GPT(config).state_dict()
    missing = sorted(set(expected) - set(state) - {"lm_head.weight"})
    if missing:
        raise UserError(f"the checkpoint's weights lack {_short_list(missing)}: it is not a complete hellogpt model")
    for name in expected:
        if name == "lm_head.weight":
            continue  # tied: transformers re-ties it to transformer.wte.weight on load
        tensor = state[name].detach().to("cpu", torch.float32)
        if name == "transformer.wte.weight":
            tensor = tensor[:vocab_size]
        if _needs_zero_bias(name, expected):
            yield name[: -len("weight")] + "bias", torch.zeros(tensor.shape[0])
        if name.endswith(CONV1D_WEIGHT_SUFFIXES):
            tensor = tensor.t()
        yield name, tensor.contiguous()


def _needs_zero_bias(weight_name: str, our_names: dict[str, Any]) -> bool:
    """GPT-2 has a bias on every Linear and LayerNorm; a bias=False model exports zeros there (same logits)."""
    if not weight_name.endswith(".weight") or weight_name.endswith(("wte.weight", "wpe.weight")):
        return False
    return weight_name[: -len("weight")] + "bias" not in our_names
