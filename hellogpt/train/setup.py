"""Setting a run up: the resolved config read once, top to bottom, into the data, model, optimizer and state it trains.

The dataset is prepared here when missing (and `data.source` says from what), on the main rank while the others
wait: this is the one place that does it, for `train`, `tune`, torchrun ranks and scripts alike.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Optional

import numpy as np
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from hellogpt.checkpoints.format import Checkpoint, gpt_config_from_args
from hellogpt.checkpoints.weights import gpt_from_state_dict, strip_wrapper_prefixes
from hellogpt.config.layers import ResolvedConfig
from hellogpt.config.schema import DataConfig, RunConfig, SystemConfig
from hellogpt.data.loader import TokenDataset, open_dataset
from hellogpt.errors import UserError
from hellogpt.hardware.devices import needs_grad_scaler, refuse_quantized_training
from hellogpt.hardware.probes.peak import peak_flops
from hellogpt.model.added_rows import add_row_adapters
from hellogpt.model.architectures import build_model
from hellogpt.model.gpt import GPT, GPTConfig
from hellogpt.model.lora import LoraSpec, add_adapters, hold_frozen_weights_in, load_adapter_state_dict
from hellogpt.train.batches import BatchSource
from hellogpt.train.dataset import dataset_exists, missing_dataset_message, prepare_missing_dataset
from hellogpt.train.distributed import DistributedContext, local_accumulation_steps, wait_for_main_rank
from hellogpt.train.lora import frozen_dtype, lora_spec
from hellogpt.train.optimizer import build_optimizer, require_same_optimizer, saved_state_in_layout
from hellogpt.train.precision import agree_on_dtype, run_dtype
from hellogpt.train.rng_state import restore_rng_state
from hellogpt.train.vocabulary import adds_special_tokens, with_vocabulary_rows
from hellogpt.train.resume import (
    RunProgress,
    load_resume_checkpoint,
    lora_weights_of,
    restored_rng,
    restored_sampler,
    weights_of,
)

# Architecture keys a tuned or resumed model must share with its source; dropout may change.
ARCHITECTURE_KEYS = ("arch", "n_layer", "n_head", "n_embd", "block_size", "vocab_size", "bias")
# Shown while a missing dataset is prepared: `preparing(data, data_dir)` wraps the work (the CLI shows a status).
Preparing = Callable[[DataConfig, Path], ContextManager[Any]]


def prepare_quietly(data: DataConfig, data_dir: Path) -> ContextManager[Any]:
    return contextlib.nullcontext()


@dataclass
class RunParts:
    """Everything one run holds once set up."""

    config: RunConfig
    profile: Optional[str]
    context: DistributedContext
    dataset: TokenDataset
    batches: BatchSource
    model: GPT
    forward_model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    dtype: torch.dtype
    accumulation_steps: int
    data_rng: np.random.Generator
    run_name: str
    origin: dict[str, Any]
    # The peak FLOP/s MFU is measured against (main rank only; None when the probe failed or system.measure is off).
    peak_flops: Optional[float]
    progress: RunProgress
    # A LoRA run: the adapters' spec and the base they sit on (None for a full run).
    lora: Optional[LoraSpec] = None
    base: Optional[dict[str, Any]] = None

    @property
    def tokens_per_step(self) -> int:
        train = self.config.train
        return train.batch_size * self.model.config.block_size * train.gradient_accumulation_steps


def build_run(
    resolved: ResolvedConfig,
    context: DistributedContext,
    *,
    data_dir: Path,
    checkpoint_path: Path,
    init: Optional[dict[str, Any]],
    resume: bool,
    run_name: Optional[str],
    preparing: Preparing = prepare_quietly,
) -> RunParts:
    """Open (or prepare) the data, build or load the model and optimizer, seed everything."""
    config = resolved.config
    dataset = open_training_data(config.data, context, data_dir, preparing, config.model.block_size)
    accumulation_steps = local_accumulation_steps(config.train.gradient_accumulation_steps, context.world_size)
    resumed_path, resumed = load_resume_checkpoint(checkpoint_path, config) if resume else (None, None)
    # The architecture, tokenizer and origin decide the dtype, which decides how a LoRA base is loaded.
    outline = weights_of(resumed) if resumed is not None else init
    if outline is not None:
        _check_tokenizer_fits(outline, dataset, resumed_path)
    if resumed is None and init is not None:
        init = outline = with_vocabulary_rows(init, dataset.tokenizer.vocab_size)
    model_config = _model_config(resolved, dataset, outline, is_resume=resume)
    dataset.require_windows(model_config.block_size)
    dtype = agree_on_dtype(run_dtype(config.system.dtype, context.device, model_config, resumed, resumed_path), context)
    source = _starting_weights(resumed, dtype) if resumed is not None else init
    lora = _lora_of_run(resolved, resumed, resumed_path, source, model_config.arch)

    torch.manual_seed(config.train.seed + context.rank)
    model = build_model(model_config) if source is None else _model_on(model_config, source["model"])
    if lora is not None and source is not None:
        _add_lora(model, lora, source, dtype)
    model.activation_checkpointing = config.train.activation_checkpointing
    model.to(context.device)
    refuse_quantized_training(config.system.quantize)
    optimizer = build_optimizer(model, config.optim, context.device, tunes_adapters=lora is not None)
    scaler = torch.amp.GradScaler(context.device.type, enabled=needs_grad_scaler(dtype))
    data_rng = np.random.default_rng(config.train.seed + context.rank)
    progress = RunProgress()
    if resumed is not None and resumed_path is not None:
        _load_optimizer_state(optimizer, scaler, resumed, resumed_path)
        progress = RunProgress.resumed_from(resumed)
        restore_rng_state(restored_rng(resumed, context))
        data_rng = restored_sampler(resumed.sampler, context, data_rng)
    if context.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return RunParts(
        config=config,
        profile=resolved.profile,
        context=context,
        dataset=dataset,
        batches=BatchSource(dataset, config.train.batch_size, model_config.block_size, context.device),
        model=model,
        forward_model=_wrap_for_training(model, config, context),
        optimizer=optimizer,
        scaler=scaler,
        dtype=dtype,
        accumulation_steps=accumulation_steps,
        data_rng=data_rng,
        run_name=run_name or (resumed.run_name if resumed is not None else None) or checkpoint_path.stem,
        origin=(source or {}).get("origin") or {"kind": "scratch"},
        peak_flops=_peak_flops(context.device, dtype, config.system) if context.is_main else None,
        progress=progress,
        lora=lora,
        base=source.get("base") if lora is not None and source is not None else None,
    )


def open_training_data(
    data: DataConfig, context: DistributedContext, data_dir: Path, preparing: Preparing, block_size: Optional[int] = None
) -> TokenDataset:
    """Open the dataset; prepare it first (main rank only, the others wait) when the config names its source."""
    if context.is_main and not dataset_exists(data_dir) and data.source:
        with preparing(data, data_dir):
            prepare_missing_dataset(data, data_dir, block_size=block_size)
    wait_for_main_rank(context)
    if not dataset_exists(data_dir):
        raise UserError(missing_dataset_message(data, data_dir))
    return open_dataset(data_dir)


def _starting_weights(resumed: Checkpoint, dtype: torch.dtype) -> dict[str, Any]:
    if not resumed.is_lora:
        return weights_of(resumed)
    # Token rows added under LoRA (the chat markers) are not in the base: grown again, then restored with the adapters.
    return with_vocabulary_rows(lora_weights_of(resumed, dtype), resumed.model_args.vocab_size)


def _lora_of_run(
    resolved: ResolvedConfig, resumed: Optional[Checkpoint], resumed_path: Optional[Path], source: Optional[dict[str, Any]],
    arch: str,
) -> Optional[LoraSpec]:
    """The adapters of this run: a resumed LoRA checkpoint's own (the config may not contradict them), else the
    `lora` section when enabled, which needs pretrained weights under it (unset targets: all of `arch`'s)."""
    config = resolved.config.lora
    if resumed is not None and resumed.is_lora:
        saved = LoraSpec.from_dict(resumed.lora or {})
        wanted = lora_spec(config, arch)
        conflicts = [
            f"{key} {getattr(wanted, key)} vs {getattr(saved, key)}"
            for key in ("rank", "alpha", "dropout", "targets")
            if resolved.source_of(f"lora.{key}") != "base" and getattr(wanted, key) != getattr(saved, key)
        ]
        if conflicts:
            raise UserError(
                f"the lora settings do not fit {resumed_path}: {', '.join(conflicts)} (config vs checkpoint); "
                "resume with the settings it was tuned with, or start a new tune"
            )
        return saved
    if not config.enabled:
        return None
    if resumed is not None:
        raise UserError(
            f"{resumed_path} is a full fine-tune, not a LoRA one: resume it without --lora (lora.enabled=false)"
        )
    if source is None:
        raise UserError(
            "lora.enabled trains adapters on pretrained weights, and this run starts from scratch: "
            "use `hellogpt tune --from MODEL --lora`, or set lora.enabled=false"
        )
    if source.get("base") is None:
        raise ValueError("a LoRA tune needs init['base'], the reference its checkpoint records (load_tuning_source)")
    return lora_spec(config, arch)


def _model_on(model_config: GPTConfig, state_dict: dict[str, torch.Tensor]) -> GPT:
    """The GPT around the given weights (assigned: no random init, no second copy), dropout from `model_config`."""
    model = gpt_from_state_dict(model_config, strip_wrapper_prefixes(state_dict))
    return model.train()


def _add_lora(model: GPT, lora: LoraSpec, source: dict[str, Any], dtype: torch.dtype) -> None:
    """Adapters on the frozen base (restored ones when resuming), the base held in the run's `dtype`."""
    try:
        add_adapters(model, lora)
        if source.get("added_rows_from") is not None:
            add_row_adapters(model, int(source["added_rows_from"]))
        if source.get("adapters") is not None:
            load_adapter_state_dict(model, source["adapters"])
    except ValueError as error:
        raise UserError(f"LoRA: {error}: check lora.targets") from None
    hold_frozen_weights_in(model, frozen_dtype(dtype))


def _load_optimizer_state(
    optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, checkpoint: Checkpoint, path: Path
) -> None:
    require_same_optimizer(optimizer, checkpoint.optimizer, path)
    try:
        optimizer.load_state_dict(saved_state_in_layout(optimizer, checkpoint.optimizer or {}))
        if checkpoint.scaler and scaler.is_enabled():
            scaler.load_state_dict(checkpoint.scaler)
    except (ValueError, KeyError, TypeError, RuntimeError) as error:
        raise UserError(
            f"{path}'s optimizer state does not fit its model ({' '.join(str(error).split())[:120]}): "
            f"the file was edited or written by another program; start anew from its weights with `hellogpt tune --from {path}`"
        ) from None


def _check_tokenizer_fits(source: dict[str, Any], dataset: TokenDataset, checkpoint_path: Optional[Path]) -> None:
    """The weights' tokenizer must be the dataset's: same ids for the same text."""
    description = source.get("tokenizer")
    if description is None or description == dataset.tokenizer.description():
        return
    if checkpoint_path is None and adds_special_tokens(description, dataset.tokenizer.description()):
        return  # the chat markers: tuning grows the rows it lacks (with_vocabulary_rows)
    what = str(checkpoint_path) if checkpoint_path else f"the weights to tune ({_origin_name(source)})"
    theirs, ours = description.get("kind", "?"), dataset.tokenizer.name
    detail = f"{theirs} vs {ours}" if theirs != ours else f"two different {ours} vocabularies"
    raise UserError(
        f"{what} was trained with another tokenizer than dataset {dataset.path} ({detail}): "
        f"prepare the data with the checkpoint's tokenizer, or train from scratch"
    )


def _origin_name(source: dict[str, Any]) -> str:
    origin = source.get("origin") or {}
    return str(origin.get("path") or origin.get("source") or "init")


def _model_config(
    resolved: ResolvedConfig, dataset: TokenDataset, source: Optional[dict[str, Any]], is_resume: bool
) -> GPTConfig:
    """The architecture: from the config (vocabulary from the tokenizer when unset), or from the weights given."""
    config = resolved.config
    tokenizer_vocab = dataset.tokenizer.vocab_size
    vocab_size = config.model.vocab_size or tokenizer_vocab
    if vocab_size < tokenizer_vocab:
        raise UserError(
            f"model.vocab_size {vocab_size} is smaller than the {dataset.tokenizer.name} tokenizer's "
            f"{tokenizer_vocab} tokens of {dataset.path}: unset it or set model.vocab_size >= {tokenizer_vocab}"
        )
    from_config = GPTConfig(**{**config.model.model_dump(), "vocab_size": vocab_size})
    if source is None:
        return from_config
    saved = gpt_config_from_args(source["model_args"])
    if saved.vocab_size < tokenizer_vocab:
        raise UserError(
            f"the checkpoint's vocabulary ({saved.vocab_size}) is smaller than the tokenizer of {dataset.path} "
            f"({tokenizer_vocab}): use a dataset prepared with the checkpoint's tokenizer"
        )
    # The architecture comes from the weights; what the config sets explicitly must agree with it.
    explicit = [key for key in ARCHITECTURE_KEYS if resolved.source_of(f"model.{key}") != "base"]
    wanted = config.model.model_dump()
    conflicts = [
        f"{key} {wanted[key]} vs {getattr(saved, key)}"
        for key in explicit
        if wanted[key] is not None and wanted[key] != getattr(saved, key)
    ]
    if conflicts:
        what = "the checkpoint to resume" if is_resume else f"the weights to tune ({_origin_name(source)})"
        raise UserError(
            f"the config's model section does not fit {what}: {', '.join(conflicts)} (config vs checkpoint); "
            f"use the profile it was trained with or drop those model.* settings"
        )
    return GPTConfig(**{**saved.to_dict(), "dropout": config.model.dropout})


def _wrap_for_training(model: GPT, config: RunConfig, context: DistributedContext) -> nn.Module:
    """torch.compile (auto = on CUDA only) and DistributedDataParallel around the model."""
    wrapped: nn.Module = model
    compile_setting = config.system.compile
    if compile_setting is True or (compile_setting == "auto" and context.device.type == "cuda"):
        wrapped = torch.compile(model)
    if context.is_distributed:
        device_ids = [context.local_rank] if context.device.type == "cuda" else None
        wrapped = DistributedDataParallel(wrapped, device_ids=device_ids)
    return wrapped


def _peak_flops(device: torch.device, dtype: torch.dtype, system: SystemConfig) -> Optional[float]:
    """Peak FLOP/s for MFU; a failing probe only costs the MFU column."""
    try:
        return peak_flops(device, dtype, override=system.peak_flops, measure=system.measure)
    except (RuntimeError, OSError, ValueError):
        return None
