"""Hugging Face GPT-2 in and out: loaded models compute transformers' logits, exports load back in transformers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, GPT2Config, GPT2LMHeadModel

from hellogpt.decode.cache import BatchedKVCache
from hellogpt.errors import UserError
from hellogpt.model.gpt import GPT, GPTConfig
from hellogpt.export import export_checkpoint
from hellogpt.model.hf import TOKENIZER_DESCRIPTION_FILE, _convert_hf_state_dict, is_huggingface_source, load_pretrained

GPT2_VOCAB = 50257


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random transformers GPT-2 (2 layers, width 64) saved the way the hub stores models."""
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=64))
    directory = tmp_path_factory.mktemp("tiny-gpt2")
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def hf_model(hf_dir: Path) -> GPT2LMHeadModel:
    return GPT2LMHeadModel.from_pretrained(hf_dir).eval()


@pytest.fixture(scope="module")
def our_model(hf_dir: Path) -> GPT:
    model, _ = load_pretrained(str(hf_dir))
    return model


def random_ids(length: int, batch: int = 2, seed: int = 0, vocab: int = GPT2_VOCAB) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def tiny_payload(bias: bool = True, vocab_size: int = 50304, tokenizer: dict | None = None, seed: int = 0) -> dict:
    """A checkpoint payload (contract 3) around a random model, as the training loop would save it."""
    torch.manual_seed(seed)
    config = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=vocab_size, bias=bias, dropout=0.0, arch="gpt2")
    model = GPT(config)
    with torch.no_grad():  # non-zero biases and LayerNorm parameters, so that a mix-up shows in the logits
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    return {"model_args": config.to_dict(), "model": model.state_dict(), "tokenizer": tokenizer or {"kind": "gpt2"}}


def our_logits(payload: dict, ids: torch.Tensor) -> torch.Tensor:
    model = GPT(GPTConfig(**payload["model_args"]))
    model.load_state_dict(payload["model"])
    with torch.no_grad():
        return model.eval()(ids)[0]


def test_load_pretrained_returns_an_fp32_cpu_model_and_its_origin(
    hf_dir: Path, our_model: GPT, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(hf_dir.parent)
    _, origin = load_pretrained(hf_dir.name)
    assert origin == {"kind": "huggingface", "source": str(hf_dir.resolve())}  # absolute: readable from anywhere
    assert our_model.config == GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=1024, vocab_size=GPT2_VOCAB, dropout=0.0, bias=True, arch="gpt2")
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in our_model.parameters())
    assert our_model.lm_head.weight is our_model.transformer.wte.weight


@pytest.mark.parametrize("length", [1, 7, 64, 200])
def test_loaded_model_logits_equal_transformers(our_model: GPT, hf_model: GPT2LMHeadModel, length: int) -> None:
    ids = random_ids(length, seed=length)
    with torch.no_grad():
        ours, _ = our_model(ids)
        theirs = hf_model(ids).logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_greedy_generation_matches_transformers_token_for_token(our_model: GPT, hf_model: GPT2LMHeadModel) -> None:
    prompt = random_ids(9, batch=1, seed=42)
    new_tokens = 24
    expected = hf_model.generate(
        prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=new_tokens, pad_token_id=50256
    )[0, prompt.size(1) :].tolist()
    generated = []
    with torch.no_grad():
        cache = BatchedKVCache(our_model, slots=1).sequences()
        logits = our_model.next_token_logits(prompt, cache=cache)
        for _ in range(new_tokens):
            token = int(logits.argmax(dim=-1))
            generated.append(token)
            logits = our_model.next_token_logits(torch.tensor([[token]]), cache=cache)
    assert generated == expected


def test_a_non_gpt2_model_is_refused_by_name(tmp_path: Path) -> None:
    BertConfig().save_pretrained(tmp_path)
    with pytest.raises(UserError, match="is a bert model, not GPT-2"):
        load_pretrained(str(tmp_path))


def test_a_directory_without_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no config.json"):
        load_pretrained(str(tmp_path))


def test_gpt2_variants_our_model_lacks_are_refused(tmp_path: Path) -> None:
    GPT2Config(n_layer=1, n_head=2, n_embd=32, activation_function="relu", scale_attn_by_inverse_layer_idx=True).save_pretrained(tmp_path)
    with pytest.raises(UserError, match="activation_function=relu, scale_attn_by_inverse_layer_idx=true"):
        load_pretrained(str(tmp_path))


def test_conversion_names_missing_and_unexpected_keys(hf_model: GPT2LMHeadModel, our_model: GPT) -> None:
    state = dict(hf_model.state_dict())
    del state["transformer.h.1.mlp.c_fc.weight"]
    state["transformer.h.0.attn.q_attn.weight"] = torch.zeros(1)
    with pytest.raises(UserError, match=r"missing keys transformer\.h\.1\.mlp\.c_fc\.weight, unexpected keys transformer\.h\.0\.attn\.q_attn\.weight"):
        _convert_hf_state_dict(state, our_model.config, "broken")


def test_conversion_skips_attention_mask_buffers_and_checks_shapes(hf_model: GPT2LMHeadModel, our_model: GPT) -> None:
    state = dict(hf_model.state_dict())
    state["transformer.h.0.attn.bias"] = torch.ones(1, 1, 1024, 1024, dtype=torch.bool)  # older transformers stored these
    state["transformer.h.0.attn.masked_bias"] = torch.tensor(-1e4)
    converted = _convert_hf_state_dict(dict(state), our_model.config, "old")
    assert "transformer.h.0.attn.bias" not in converted
    torch.testing.assert_close(converted["transformer.h.0.attn.c_attn.weight"], state["transformer.h.0.attn.c_attn.weight"].t())
    state["transformer.wpe.weight"] = torch.zeros(512, 64)
    with pytest.raises(UserError, match=r"transformer\.wpe\.weight has shape \(512, 64\), expected \(1024, 64\)"):
        _convert_hf_state_dict(state, our_model.config, "wrong")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("gpt2", True), ("gpt2-xl", True), ("openai-community/gpt2-medium", True), ("poems_hugs.pt", False),
     ("checkpoints/poems.pt", False), ("edgar_poe", False)],
)
def test_is_huggingface_source_tells_hub_models_from_checkpoints(spec: str, expected: bool) -> None:
    assert is_huggingface_source(spec) is expected


def test_is_huggingface_source_accepts_a_model_directory_only(hf_dir: Path, tmp_path: Path) -> None:
    assert is_huggingface_source(str(hf_dir))
    assert not is_huggingface_source(str(tmp_path))


@pytest.mark.parametrize(
    ("bias", "vocab_size"), [(True, 50304), (False, 50304), (True, GPT2_VOCAB)], ids=["padded", "no-bias", "exact-vocab"]
)
def test_export_loads_in_transformers_with_equal_logits(tmp_path: Path, bias: bool, vocab_size: int) -> None:
    payload = tiny_payload(bias=bias, vocab_size=vocab_size)
    out_dir = export_checkpoint(payload, tmp_path / "exported")
    hf_model = GPT2LMHeadModel.from_pretrained(out_dir).eval()
    assert hf_model.config.vocab_size == GPT2_VOCAB  # padding rows dropped: config and tokenizer agree
    ids = random_ids(40, seed=3)
    with torch.no_grad():
        theirs = hf_model(ids).logits
    torch.testing.assert_close(theirs, our_logits(payload, ids)[..., :GPT2_VOCAB], atol=1e-5, rtol=0)


def test_export_then_load_pretrained_gives_back_the_same_model(tmp_path: Path) -> None:
    payload = tiny_payload()
    out_dir = export_checkpoint(payload, tmp_path / "exported")
    model, origin = load_pretrained(str(out_dir))
    ids = random_ids(20, seed=4)
    with torch.no_grad():
        logits = model(ids)[0]
    torch.testing.assert_close(logits, our_logits(payload, ids)[..., :GPT2_VOCAB], atol=1e-5, rtol=0)
    assert origin["kind"] == "huggingface"


def test_exported_tokenizer_loads_offline_with_gpt2_ids(tmp_path: Path) -> None:
    out_dir = export_checkpoint(tiny_payload(), tmp_path / "exported")
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    assert tokenizer("Hello world")["input_ids"] == [15496, 995]
    assert tokenizer.eos_token_id == 50256
    assert tokenizer.decode([15496, 995]) == "Hello world"


# The keys of openai-community/gpt2's config.json (less task_specific_params, generation settings of the hub's
# widget): tools that read config.json themselves (llama.cpp's convert_hf_to_gguf.py reads n_ctx) expect them.
PUBLISHED_GPT2_CONFIG_KEYS = frozenset({
    "activation_function", "architectures", "attn_pdrop", "bos_token_id", "embd_pdrop", "eos_token_id",
    "initializer_range", "layer_norm_epsilon", "model_type", "n_ctx", "n_embd", "n_head", "n_layer", "n_positions",
    "resid_pdrop", "summary_activation", "summary_first_dropout", "summary_proj_to_labels", "summary_type",
    "summary_use_proj", "vocab_size",
})


def test_exported_config_has_the_keys_of_gpt2s_published_config(tmp_path: Path) -> None:
    out_dir = export_checkpoint(tiny_payload(), tmp_path / "exported")
    config = json.loads((out_dir / "config.json").read_text())
    assert PUBLISHED_GPT2_CONFIG_KEYS - config.keys() == set()
    assert config["n_ctx"] == config["n_positions"] == 64


def test_char_model_exports_weights_and_its_character_table(tmp_path: Path) -> None:
    chars = "\n !abcdefghijklmnopqrstuvwxyz"
    payload = tiny_payload(vocab_size=len(chars), tokenizer={"kind": "char", "chars": chars})
    out_dir = export_checkpoint(payload, tmp_path / "exported")
    assert json.loads((out_dir / TOKENIZER_DESCRIPTION_FILE).read_text()) == {"kind": "char", "chars": chars}
    assert not (out_dir / "vocab.json").exists()
    hf_model = GPT2LMHeadModel.from_pretrained(out_dir).eval()
    ids = random_ids(30, vocab=len(chars))
    with torch.no_grad():
        torch.testing.assert_close(hf_model(ids).logits, our_logits(payload, ids), atol=1e-5, rtol=0)
    model, _ = load_pretrained(str(out_dir))  # and back, with its table (tests/test_export_tokenizers.py)
    with torch.no_grad():
        torch.testing.assert_close(model(ids)[0], our_logits(payload, ids), atol=1e-5, rtol=0)


def test_export_refuses_an_existing_directory_unless_forced(tmp_path: Path) -> None:
    out_dir = tmp_path / "exported"
    out_dir.mkdir()
    with pytest.raises(UserError, match="already exists.*--force"):
        export_checkpoint(tiny_payload(), out_dir)
    export_checkpoint(tiny_payload(), out_dir, force=True)
    assert (out_dir / "model.safetensors").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["exported"]  # no temporary directories left


def test_force_replaces_a_previous_export_whole(tmp_path: Path) -> None:
    chars = "\n !abcdefghijklmnopqrstuvwxyz"
    out_dir = export_checkpoint(tiny_payload(vocab_size=len(chars), tokenizer={"kind": "char", "chars": chars}),
                                tmp_path / "exported")
    export_checkpoint(tiny_payload(seed=1), out_dir, force=True)
    assert json.loads((out_dir / TOKENIZER_DESCRIPTION_FILE).read_text()) == {"kind": "gpt2"}  # not the old one
    assert GPT2LMHeadModel.from_pretrained(out_dir).config.vocab_size == GPT2_VOCAB
    assert sorted(path.name for path in tmp_path.iterdir()) == ["exported"]


def test_force_never_replaces_a_directory_holding_other_files(tmp_path: Path) -> None:
    out_dir = export_checkpoint(tiny_payload(), tmp_path / "exported")
    (out_dir / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=f"refusing to replace .*holds {out_dir / 'notes.txt'}"):
        export_checkpoint(tiny_payload(seed=1), out_dir, force=True)
    assert (out_dir / "notes.txt").read_text() == "mine"


def test_exported_weights_read_back_with_the_safetensors_package(tmp_path: Path) -> None:
    from safetensors import safe_open

    out_dir = export_checkpoint(tiny_payload(), tmp_path / "exported")
    with safe_open(out_dir / "model.safetensors", framework="pt") as weights:
        assert weights.metadata() == {"format": "pt"}
        wte = weights.get_tensor("transformer.wte.weight")
    assert wte.shape == (GPT2_VOCAB, 32)
    torch.testing.assert_close(wte, tiny_payload()["model"]["transformer.wte.weight"][:GPT2_VOCAB], atol=0, rtol=0)


@pytest.mark.slow
def test_offline_without_cache_is_one_line_naming_the_local_directory_option(tmp_path: Path) -> None:
    script = (
        "from hellogpt.errors import UserError\n"
        "from hellogpt.model.hf import load_pretrained\n"
        "try:\n    load_pretrained('gpt2')\n"
        "except UserError as error:\n    print(error)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout + result.stderr
    assert "cannot be reached" in lines[0] and "--from path/to/dir" in lines[0]


@pytest.mark.slow
def test_offline_a_hub_name_loads_from_the_hf_home_cache(tmp_path: Path, hf_dir: Path) -> None:
    snapshot = tmp_path / "hf_home" / "hub" / "models--gpt2" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abcd")
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).write_bytes((hf_dir / name).read_bytes())
    script = (
        "from hellogpt.model.hf import load_pretrained\n"
        "model, origin = load_pretrained('gpt2')\n"
        "print(model.config.n_embd, model.config.n_layer, origin)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "64 2 {'kind': 'huggingface', 'source': 'gpt2'}"


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name file descriptors")
def test_export_fsyncs_every_file_and_its_directory_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    out_dir = export_checkpoint(tiny_payload(), tmp_path / "exported")
    staged = {Path(path).name for path in synced if Path(path).parent.name.endswith(".tmp")}
    assert staged == {path.name for path in out_dir.iterdir()}
    assert any(Path(path).name.endswith(".tmp") for path in synced)  # the staging directory itself
    assert str(tmp_path) in synced  # and the folder holding the renamed export
