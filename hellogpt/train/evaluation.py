"""Evaluation during training: mean train and val loss over fixed batches, and a short sample of the model's text."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Generator, Optional

import numpy as np
import torch

from hellogpt.config.schema import SampleConfig
from hellogpt.data.chat_template import is_chat_tokenizer, render_prompt, turn_end_id
from hellogpt.data.tokenizer import Tokenizer
from hellogpt.decode.stream import stream_tokens
from hellogpt.errors import UserError
from hellogpt.hardware.devices import autocast_context
from hellogpt.model.gpt import GPT
from hellogpt.train.batches import BatchSource, Windows
from hellogpt.train.distributed import DistributedContext, all_reduce_sum
from hellogpt.train.events import StepProgress
from hellogpt.train.progress import ProgressClock

# Eval batches come from their own fixed seed: every evaluation sees the same windows, and
# evaluating never moves the training sampler (which keeps resume exact).
EVAL_SEED_OFFSET = 0xE7A1
SPLITS = ("train", "val")
SAMPLE_PROMPT_CHARS = ("\n", " ")
SAMPLE_QUESTION = "What is this?"


@dataclass(frozen=True)
class Evaluator:
    """Evaluates `model` on batches shared out among ranks, and samples from it with its own RNG."""

    model: GPT
    batches: BatchSource
    context: DistributedContext
    dtype: torch.dtype
    seed: int

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return autocast_context(self.context.device, self.dtype)

    def losses(
        self, batches: int, step: int, stop_requested: Callable[[], bool]
    ) -> Generator[StepProgress, None, Optional[dict[str, float]]]:
        """Mean loss over `batches` fixed batches per split; None when a stop arrives, so that a long evaluation never
        delays Ctrl-C. Ranks share the batches out in rounds of world_size and ask `stop_requested` (agreed among
        them) before each round: the same number of times on every rank, whatever its share."""
        world_size, rank = self.context.world_size, self.context.rank
        losses: dict[str, float] = {}
        clock = ProgressClock()
        self.model.eval()
        try:
            for split_index, split in enumerate(SPLITS):
                rng = np.random.default_rng((self.seed, EVAL_SEED_OFFSET, split_index))
                total = torch.zeros((), device=self.context.device, dtype=loss_sum_dtype(self.context.device))
                for batch_index in range(batches):
                    windows = self.batches.windows(split, rng)
                    if batch_index % world_size == 0:
                        if self.context.is_main and clock.due():
                            done = split_index * batches + batch_index
                            yield StepProgress(step, "eval", done, 2 * batches, clock.elapsed())
                        if stop_requested():
                            return None
                    if batch_index % world_size != rank:
                        continue
                    total += self._loss(windows).to(total.dtype)
                losses[split] = float(all_reduce_sum(total, self.context)) / batches
        finally:
            self.model.train()
        return losses

    @torch.no_grad()
    def _loss(self, windows: Windows) -> torch.Tensor:
        inputs, targets = self.batches.to_device(windows)
        with self.autocast():
            _, loss = self.model(inputs, targets)
        return loss

    def sample_text(self, tokenizer: Tokenizer, sample: SampleConfig) -> str:
        """A short continuation from the model as trained, to show what it learned (its own RNG: no side effects)."""
        generator = torch.Generator(device=self.context.device)
        generator.manual_seed(sample.seed if sample.seed is not None else self.seed)
        self.model.eval()
        try:
            # Under the run's autocast: a LoRA base may be held in bf16/fp16 beside fp32 embeddings.
            with self.autocast():
                produced = list(
                    stream_tokens(
                        self.model,
                        sample_prompt(tokenizer),
                        max_new_tokens=sample.max_new_tokens,
                        temperature=sample.temperature,
                        top_k=sample.top_k,
                        top_p=sample.top_p,
                        eot_id=turn_end_id(tokenizer) if is_chat_tokenizer(tokenizer) else tokenizer.eot_id,
                        vocab_size=tokenizer.vocab_size,
                        generator=generator,
                    )
                )
        finally:
            self.model.train()
        return tokenizer.decode(produced)


def loss_sum_dtype(device: torch.device) -> torch.dtype:
    """float64 for summing eval losses, except on MPS, which has no float64 tensors."""
    return torch.float32 if device.type == "mps" else torch.float64


def sample_prompt(tokenizer: Tokenizer) -> list[int]:
    """A chat model is asked a question (its sample is the reply, up to the end of its turn); else one token to start
    from: end-of-text where the tokenizer has one, else a newline or a space."""
    if is_chat_tokenizer(tokenizer):
        with contextlib.suppress(UserError):  # a char vocabulary may lack the question's characters
            return render_prompt([{"role": "user", "content": SAMPLE_QUESTION}], tokenizer)
    if tokenizer.eot_id is not None:
        return [tokenizer.eot_id]
    for text in SAMPLE_PROMPT_CHARS:
        ids = tokenizer.encode(text)
        if ids:
            return ids[:1]
    return [0]
