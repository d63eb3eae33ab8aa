"""The typed run configuration: one pydantic model per section, `RunConfig` holding them.

Every default lives here and nowhere else. The base values follow the old
Hello-GPT `train.yaml` (GPT-2-124M-sized), except that device and dtype are
chosen automatically. No torch import: `--help` must stay instant.
"""

from __future__ import annotations

import random
import re
from typing import Annotated, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from hellogpt.config.defaults import DEFAULT_TOKENIZER, DEFAULT_VAL_FRACTION
from hellogpt.config.tokenizer_names import check_tokenizer_name

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
# torch seeds take 0..2**64-1 (negatives wrap) and numpy's generators only non-negative ones; training seeds
# rank r with seed + r, so seeds stop at 2**63 and leave every rank room below torch's limit.
SEED_LIMIT = 2**63
# The projections of each architecture's blocks that LoRA may adapt, by their module names inside the block.
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "gpt2": ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"),
    "qwen3": (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
    ),
}
_ANY_LORA_TARGET = " or ".join(f"{', '.join(names)} ({arch})" for arch, names in LORA_TARGETS.items())


def _seed_in_range(seed: int) -> int:
    if not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"{seed} is not a seed: use a whole number from 0 to 2**63-1 ({SEED_LIMIT - 1})")
    return seed


Seed = Annotated[int, AfterValidator(_seed_in_range)]


def fresh_seed() -> int:
    """A seed from fresh entropy, for a sampler whose seed is unset: any value a configured seed may take."""
    return random.SystemRandom().randrange(SEED_LIMIT)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    """Architecture of the GPT."""

    arch: Literal["gpt2", "qwen3"] = Field(
        "gpt2",
        description="gpt2: learned positions, LayerNorm, GELU, tied head; qwen3: Qwen3's block (rotary, QK-norm, "
        "RMSNorm, SwiGLU, untied head, no biases), exported as transformers' Qwen3ForCausalLM.",
    )
    n_layer: int = Field(12, gt=0, description="Transformer blocks.")
    n_head: int = Field(12, gt=0, description="Attention heads per block.")
    n_embd: int = Field(768, gt=0, description="Width of the residual stream.")
    block_size: int = Field(1024, gt=0, description="Context length in tokens.")
    vocab_size: Optional[int] = Field(
        None, gt=0, description="Embedding rows; unset = the dataset tokenizer's size (50304 pads GPT-2's 50257 for speed)."
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout probability.")
    bias: bool = Field(False, description="Biases in Linear and LayerNorm layers (GPT-2 has them).")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "ModelConfig":
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.arch == "qwen3" and self.bias:
            raise ValueError("qwen3 has no biases: set model.bias=false (or model.arch=gpt2)")
        return self


class DataConfig(_Section):
    """Where the token bins come from."""

    dataset: Optional[str] = Field(
        None, description="A folder of bins from `hellogpt prepare`, or a name looked up as `data/<name>`."
    )
    source: Optional[str] = Field(
        None, description="What `train` prepares by itself when the dataset is missing: a path, or builtin:pydoc, "
        "builtin:edgar_poe or builtin:poems."
    )
    tokenizer: str = Field(
        DEFAULT_TOKENIZER,
        description="Tokenizer used when preparing `source`: gpt2 (GPT-2's BPE, 50257 ids), char (one id per "
        "character of the corpus) or bpe:N (a byte-level BPE of N ids trained on the training split, 256 <= N <= 65536).",
    )
    val_fraction: float = Field(DEFAULT_VAL_FRACTION, gt=0.0, lt=1.0, description="Share of the text kept for validation.")

    @field_validator("tokenizer")
    @classmethod
    def _known_tokenizer(cls, name: str) -> str:
        return check_tokenizer_name(name)


class OptimConfig(_Section):
    """The optimizer (AdamW, or Muon with AdamW) and the learning-rate schedule."""

    name: Literal["adamw", "muon"] = Field(
        "adamw",
        description="adamw for every weight; muon: Muon for the matrices inside the blocks, AdamW (learning_rate) for "
        "embeddings, head and vectors. LoRA adapters always tune with AdamW.",
    )
    learning_rate: float = Field(
        6e-4, gt=0.0, description="Peak AdamW learning rate, reached at the end of warmup (every weight's with adamw)."
    )
    muon_learning_rate: float = Field(
        0.02, gt=0.0, description="Peak Muon learning rate of the block matrices (optim.name=muon); same schedule."
    )
    muon_momentum: float = Field(0.95, ge=0.0, lt=1.0, description="Muon's Nesterov momentum (optim.name=muon).")
    embedding_learning_rate: Optional[float] = Field(
        None,
        gt=0.0,
        description="Peak AdamW rate of an untied token embedding (qwen3), without weight decay; same schedule. "
        "Unset: learning_rate, with weight decay. A tied one (gpt2) is also the head and keeps learning_rate.",
    )
    weight_decay: float = Field(0.1, ge=0.0, description="AdamW weight decay, applied to matrices only.")
    beta1: float = Field(0.9, ge=0.0, lt=1.0, description="AdamW decay rate of the gradient's running mean.")
    beta2: float = Field(0.95, ge=0.0, lt=1.0, description="AdamW decay rate of the squared gradient's running mean.")
    grad_clip: float = Field(1.0, ge=0.0, description="Gradient-norm clip; 0 disables it.")
    decay_lr: bool = Field(True, description="Cosine decay after warmup; false keeps the rate constant.")
    warmup_iters: int = Field(2000, ge=0, description="Steps of linear warmup up to learning_rate.")
    lr_decay_iters: int = Field(600000, gt=0, description="Step at which the cosine decay reaches min_lr.")
    min_lr: float = Field(
        6e-5, ge=0.0, description="AdamW learning rate at the end of the decay and after it; Muon's decays in proportion."
    )


class TrainConfig(_Section):
    """The loop: batch, length, evaluation and checkpoints."""

    batch_size: int = Field(12, gt=0, description="Sequences per micro-batch.")
    gradient_accumulation_steps: int = Field(40, gt=0, description="Micro-batches per optimizer step (all ranks together).")
    max_iters: int = Field(600000, gt=0, description="Optimizer steps to train for.")
    eval_interval: int = Field(2000, gt=0, description="Steps between evaluations (and best-model saves).")
    eval_iters: int = Field(200, gt=0, description="Batches averaged per evaluation.")
    log_interval: int = Field(1, gt=0, description="Steps between progress readings (loss, speed, MFU).")
    always_save_checkpoint: bool = Field(True, description="Save at every eval; false saves only on a new best val loss.")
    out_dir: str = Field("checkpoints", description="Where checkpoints are written.")
    checkpoint_name: str = Field("checkpoint.pt", description="File name of this run's checkpoint in out_dir.")
    seed: Seed = Field(1337, description="Seeds the weights, the batches and dropout: 0 to 2**63-1.")
    runs_dir: str = Field("runs", description="Where run records (config, metrics, loss plot) are written.")
    activation_checkpointing: bool = Field(
        False, description="Blocks recompute their activations in backward: the same losses in less memory, ~30% slower."
    )

    @field_validator("checkpoint_name")
    @classmethod
    def _with_pt_suffix(cls, name: str) -> str:
        name = name.strip()
        if not name:
            raise ValueError("checkpoint_name must not be empty")
        return name if name.endswith(".pt") else f"{name}.pt"


class SampleConfig(_Section):
    """Text generation: chat and the samples shown while training."""

    max_new_tokens: int = Field(200, gt=0, description="Longest reply or sample, in tokens.")
    temperature: float = Field(0.8, ge=0.0, description="0 means greedy.")
    top_k: Optional[int] = Field(256, gt=0, description="Keep the k most likely tokens; unset keeps all.")
    top_p: Optional[float] = Field(None, gt=0.0, le=1.0, description="Nucleus sampling mass; unset disables it.")
    seed: Optional[Seed] = Field(
        None, description="Seed for reproducible samples (0 to 2**63-1); unset draws a fresh one."
    )


class SystemConfig(_Section):
    """Hardware choices."""

    device: str = Field("auto", description="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Compute dtype; auto picks by device and model width (`hellogpt info` shows the rule)."
    )
    compile: Union[Literal["auto"], bool] = Field("auto", description="torch.compile: auto = on for CUDA, off on CPU.")
    peak_flops: Optional[float] = Field(
        None, gt=0, description="Peak FLOP/s for MFU: the spec-sheet peak; unset = the measured matmul peak (cached)."
    )
    quantize: Literal["none", "int8"] = Field(
        "none", description="int8: int8 weights (one scale per output channel) for chat, serve and eval on CPUs."
    )
    measure: Literal["auto", "off"] = Field(
        "auto",
        description="Speed probes (decode threads, bf16 packing, serve layout, MFU peak): auto times them once and "
        "caches; off uses fixed rules and times nothing (HELLOGPT_MEASURE=off forces it). Never changes the numbers.",
    )

    @field_validator("measure", mode="before")
    @classmethod
    def _yaml_off(cls, measure: object) -> object:
        """YAML reads a bare `off` as false (and `on` as true): `measure: off` means what it says."""
        if isinstance(measure, bool):
            return "auto" if measure else "off"
        return measure

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        device = device.strip().lower()
        if not _DEVICE_PATTERN.match(device):
            raise ValueError(f"'{device}' is not a device: use auto, cpu, cuda, cuda:N or mps")
        return device


class LoraConfig(_Section):
    """Low-rank adapters: tune `rank`-wide corrections of the frozen projections instead of the weights."""

    enabled: bool = Field(False, description="Train adapters only (`hellogpt tune --lora`); the base stays frozen.")
    rank: int = Field(8, description="Width r of each adapter (B is out x r, A is r x in): 4-64; 8 suits most tunes.")
    alpha: float = Field(16.0, gt=0.0, description="Scale: the update is alpha / rank * B @ A.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the adapters' input while training.")
    targets: Optional[list[str]] = Field(
        None,
        description=f"Projections that get adapters, in every block; unset = all of the model's architecture: any of "
        f"{_ANY_LORA_TARGET}.",
    )

    @field_validator("rank")
    @classmethod
    def _positive_rank(cls, rank: int) -> int:
        if rank < 1:
            raise ValueError(f"rank {rank} adapts nothing: use a rank of at least 1 (8 is the usual start)")
        return rank

    @field_validator("targets", mode="before")
    @classmethod
    def _comma_separated(cls, targets: object) -> object:
        """`--set lora.targets=attn.c_attn,mlp.c_fc` as well as a YAML list."""
        return [part.strip() for part in targets.split(",") if part.strip()] if isinstance(targets, str) else targets

    @field_validator("targets")
    @classmethod
    def _known_targets(cls, targets: Optional[list[str]]) -> Optional[list[str]]:
        if targets is None:
            return None
        if not targets:
            raise ValueError(f"targets must name at least one of {_ANY_LORA_TARGET}")
        known = {name for names in LORA_TARGETS.values() for name in names}
        unknown = [target for target in targets if target not in known]
        if unknown:
            raise ValueError(f"unknown target '{unknown[0]}': use any of {_ANY_LORA_TARGET}")
        return list(dict.fromkeys(targets))


class RunConfig(_Section):
    """Everything a run needs, by section."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    sample: SampleConfig = Field(default_factory=SampleConfig)
    system: SystemConfig = Field(default_factory=SystemConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)


SECTION_NAMES: tuple[str, ...] = tuple(RunConfig.model_fields)
