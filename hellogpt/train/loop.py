"""The training loop: yields events, prints nothing.

One loop serves `train` (from scratch or `--resume`), `tune` (from given weights) and every
rank of torchrun. Checkpoints are written at evaluation time; an interrupt finishes the step
in flight and saves; a NaN/inf loss stops before the bad update is applied.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Generator, Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from hellogpt.config.layers import ResolvedConfig
from hellogpt.config.schema import RunConfig
from hellogpt.data.loader import TokenDataset, open_dataset
from hellogpt.errors import UserError
from hellogpt.model.gpt import GPT, GPTConfig
from hellogpt.model.lora import (
    LoraSpec,
    adapter_state_dict,
    add_adapters,
    hold_frozen_weights_in,
    load_adapter_state_dict,
)
from hellogpt.train.dataset import dataset_exists, missing_dataset_message, prepare_missing_dataset
from hellogpt.train.distributed import (
    DistributedContext,
    local_accumulation_steps,
    setup_distributed,
    teardown_distributed,
)
from hellogpt.train.checkpoint import (
    Checkpoint,
    capture_rng_state,
    generator_from_state,
    generator_state,
    gpt_config_from_args,
    gpt_from_state_dict,
    latest_checkpoint_path,
    load_checkpoint,
    restore_rng_state,
    resume_source,
    save_checkpoint,
    strip_wrapper_prefixes,
)
from hellogpt.train.events import (
    CheckpointEvent,
    EvalEvent,
    RunFinished,
    RunStarted,
    StepEvent,
    StepProgress,
    TrainingEvent,
)
from hellogpt.train.optimizer import build_optimizer
from hellogpt.train.schedule import learning_rate_at

# Architecture keys a tuned or resumed model must share with its source; dropout may change.
ARCHITECTURE_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "bias")
# Eval batches come from their own fixed seed: every evaluation sees the same windows, and
# evaluating never moves the training sampler (which keeps resume exact).
EVAL_SEED_OFFSET = 0xE7A1
SAMPLE_PROMPT_CHARS = ("\n", " ")
# Long steps and evaluations report their progress (a slow CPU must not look stuck): after this
# long into one, and then at most this often.
PROGRESS_AFTER_SECONDS = 2.0
PROGRESS_EVERY_SECONDS = 2.0
# A forward pass costs about a third of forward + backward: eval batches are priced from train micro-steps.
FORWARD_SHARE_OF_STEP = 1 / 3
# Until a save has been timed, --max-time assumes the checkpoint is written this fast.
ASSUMED_SAVE_BYTES_PER_SECOND = 200e6
# Under --max-time the closing evaluation may take at most this share of the budget (it is cut to fit).
CLOSING_EVAL_SHARE = 0.1


def train(
    resolved: ResolvedConfig,
    *,
    data_dir: Path,
    checkpoint_path: Path,
    init: Optional[dict[str, Any]] = None,
    resume: bool = False,
    max_seconds: Optional[float] = None,
    run_name: Optional[str] = None,
) -> Iterator[TrainingEvent]:
    """Train per `resolved`, yielding events; the last one is always `RunFinished`.

    `init` starts from given weights (for tune): `model_args`, `model` (a state dict whose tensors the model
    takes over, trained in place, not copied), optionally `tokenizer` (a description, checked against the
    dataset's), `origin` (recorded as is) and, for a LoRA tune (lora.enabled), `base` (the reference a LoRA
    checkpoint records). `resume` continues the run saved at `checkpoint_path` exactly.
    """
    if resume and init is not None:
        raise ValueError("resume continues a checkpoint; init starts from other weights: pass one of them")
    context = setup_distributed(resolved.config.system.device)
    try:
        with _StopSignals() as stop_signals:
            run = _prepare_run(resolved, context, Path(data_dir), Path(checkpoint_path), init, resume, run_name)
            yield from run.events(stop_signals, max_seconds)
        if context.is_distributed:
            # Leave together: a gloo rank that destroys its group while another still holds it aborts at exit.
            dist.barrier()
    finally:
        teardown_distributed()


class _StopSignals:
    """Ctrl-C and SIGTERM ask the loop to stop after the step in flight; a second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopSignals":
        # Handlers can only be set from the main thread; elsewhere (a test's thread) the defaults stay.
        if threading.current_thread() is threading.main_thread():
            for signal_number in (signal.SIGINT, signal.SIGTERM):
                self._previous[signal_number] = signal.signal(signal_number, self._handle)
        return self

    def _handle(self, signal_number: int, frame: Optional[FrameType]) -> None:
        if self.requested and signal_number == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc_info: object) -> None:
        for signal_number, handler in self._previous.items():
            signal.signal(signal_number, handler)


@dataclass
class _RunState:
    """What changes while training and goes into the checkpoint."""

    step: int = 0
    best_val_loss: Optional[float] = None
    train_loss: Optional[float] = None
    val_loss: Optional[float] = None
    last_checkpoint_step: Optional[int] = None
    last_eval_step: Optional[int] = None
    pending_eval: bool = False
    checkpoint_paths: list[str] = field(default_factory=list)


@dataclass
class _TimeBudget:
    """`--max-time` as a real budget: the closing evaluation and save must fit inside it.

    Durations are measured as the run goes; until the first evaluation its cost is estimated
    from the micro-step time (a forward pass is about a third of forward + backward).
    """

    seconds: Optional[float] = None
    started: float = field(default_factory=time.perf_counter)
    micro_step_seconds: float = 0.0
    eval_batch_seconds: Optional[float] = None
    save_seconds: Optional[float] = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def remaining(self) -> float:
        return math.inf if self.seconds is None else self.seconds - self.elapsed()

    def cannot_fit(self, work_seconds: float, closing_seconds: float) -> bool:
        """True when `work_seconds` more, then the closing work, would run past the budget."""
        return self.seconds is not None and work_seconds + closing_seconds > self.remaining()

    def eval_batch_seconds_estimate(self) -> float:
        if self.eval_batch_seconds is not None:
            return self.eval_batch_seconds
        return self.micro_step_seconds * FORWARD_SHARE_OF_STEP

    def closing_eval_batches(self, wanted: int) -> int:
        """Eval batches per split for the closing evaluation: all of them, unless that would take more than
        CLOSING_EVAL_SHARE of the budget (a 10-minute run should not spend 8 minutes evaluating)."""
        batch = self.eval_batch_seconds_estimate()
        if self.seconds is None or batch <= 0:
            return wanted
        return max(1, min(wanted, int(CLOSING_EVAL_SHARE * self.seconds / (2 * batch))))

    def closing_seconds(self, wanted_batches: int, save_estimate: float) -> float:
        save = self.save_seconds if self.save_seconds is not None else save_estimate
        return 2 * self.closing_eval_batches(wanted_batches) * self.eval_batch_seconds_estimate() + save

    def affordable_eval_batches(self, wanted: int, save_estimate: float) -> int:
        """Eval batches per split that still fit (at least one): the closing evaluation is cut to fit."""
        batch = self.eval_batch_seconds_estimate()
        if self.seconds is None or batch <= 0:
            return wanted
        save = self.save_seconds if self.save_seconds is not None else save_estimate
        return max(1, min(self.closing_eval_batches(wanted), int((self.remaining() - save) / (2 * batch))))


@dataclass
class _Run:
    """Everything one run holds once set up: data, model, optimizer and the settings of the loop."""

    config: RunConfig
    profile: Optional[str]
    context: DistributedContext
    dataset: TokenDataset
    model: GPT
    forward_model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    dtype: torch.dtype
    accumulation_steps: int
    data_rng: np.random.Generator
    checkpoint_path: Path
    run_name: str
    origin: dict[str, Any]
    peak_flops: Optional[float]
    state: _RunState
    # A LoRA run: the adapters' spec and the base they sit on (None for a full run).
    lora: Optional[LoraSpec] = None
    base: Optional[dict[str, Any]] = None
    budget: _TimeBudget = field(default_factory=_TimeBudget)
    # Sampler and RNG states when the step in flight began: what a save mid-step records.
    _step_start_states: Optional[tuple[dict[str, Any], dict[str, Any]]] = None

    @property
    def tokens_per_step(self) -> int:
        train = self.config.train
        return train.batch_size * self.model.config.block_size * train.gradient_accumulation_steps

    @property
    def latest_path(self) -> Path:
        return latest_checkpoint_path(self.checkpoint_path)

    def events(self, stop_signals: _StopSignals, max_seconds: Optional[float]) -> Iterator[TrainingEvent]:
        """The loop itself: steps, logging, evaluation, checkpoints, and the reason it ended."""
        config, state, is_main = self.config, self.state, self.context.is_main
        start_step = state.step
        budget = self.budget = _TimeBudget(max_seconds)
        if is_main:
            yield self._run_started()
        reason, message = "completed", None
        if state.pending_eval:
            # Resumed from a stop on a step whose evaluation had not run yet: it runs first.
            if not (yield from self._evaluate_and_save(state.step >= config.train.max_iters, stop_signals)):
                reason = "interrupted"
        while reason == "completed" and state.step < config.train.max_iters:
            step_started = time.perf_counter()
            loss, grad_norm, dropped = yield from self._forward_backward(stop_signals, budget)
            next_step_fits = not budget.cannot_fit(time.perf_counter() - step_started, self._closing_seconds(budget))
            loss_value, any_stop, any_over_time = self._agree(
                loss, stop_signals.requested or dropped == "interrupted", dropped == "time_budget" or not next_step_fits
            )
            if dropped is not None:
                self.optimizer.zero_grad(set_to_none=True)  # the partial accumulation is dropped
                reason = "interrupted" if dropped == "interrupted" else "time_budget"
                break
            if not math.isfinite(loss_value) or (not self.scaler.is_enabled() and not math.isfinite(grad_norm)):
                reason, message = "diverged", self._divergence_message(loss_value, grad_norm)
                break
            self._apply_update()
            state.step += 1
            self._step_start_states = None
            step_seconds = time.perf_counter() - step_started
            if is_main and (state.step % config.train.log_interval == 0 or state.step == start_step + 1):
                yield self._step_event(loss_value, grad_norm, step_seconds, budget.elapsed())
            finishing = state.step >= config.train.max_iters
            eval_due = state.step % config.train.eval_interval == 0 or finishing
            if any_stop:
                reason, state.pending_eval = "interrupted", eval_due
                break
            if any_over_time and not finishing:
                reason = "time_budget"
                break
            if eval_due and not (yield from self._evaluate_and_save(finishing, stop_signals, closing=any_over_time)):
                reason = "interrupted"
        if reason == "time_budget":
            if state.step == start_step and not state.pending_eval:
                message = self._budget_too_short_message(max_seconds or 0.0)
            elif state.last_eval_step != state.step or state.pending_eval:
                if not (yield from self._evaluate_and_save(True, stop_signals, closing=True)):
                    reason = "interrupted"
            elif state.last_checkpoint_step != state.step:
                yield from self._save("time_budget")
        if reason == "interrupted" and (state.last_checkpoint_step != state.step or state.pending_eval):
            if state.step > start_step or state.pending_eval:
                yield from self._save("interrupted")
        if self.context.is_distributed:
            self._check_ranks_agree()
        # Every rank gets the last event, so that each process can exit as the run ended.
        wall = budget.elapsed()
        tokens = (state.step - start_step) * self.tokens_per_step
        yield RunFinished(
            step=state.step,
            reason=reason,
            best_val_loss=state.best_val_loss,
            wall_seconds=wall,
            tokens_seen=state.step * self.tokens_per_step,
            tokens_per_second=tokens / wall if wall > 0 else 0.0,
            checkpoint_paths=tuple(dict.fromkeys(state.checkpoint_paths)),
            message=message or self._finish_message(reason),
        )

    def _check_ranks_agree(self) -> None:
        """DDP keeps the replicas identical; a mismatch here is a bug, not a user error, so it is loud."""
        digest = hashlib.sha256()
        for tensor in self.model.state_dict().values():
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        digests: list[Any] = [None] * self.context.world_size
        dist.all_gather_object(digests, digest.hexdigest())
        if len(set(digests)) != 1:
            raise RuntimeError(f"DDP replicas differ after step {self.state.step}: weight digests {digests}")

    def _forward_backward(
        self, stop_signals: _StopSignals, budget: _TimeBudget
    ) -> Generator[TrainingEvent, None, tuple[Optional[torch.Tensor], float, Optional[str]]]:
        """One optimizer step's worth of micro-batches: (mean loss, gradient norm, None), or
        (None, nan, why) when a stop or the time budget arrives between micro-batches (single process).

        The sampler and RNG states at the step's start are kept, so a dropped step leaves no trace.
        """
        model = self.forward_model
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate_at(self.state.step, self.config.optim)
        self._step_start_states = (generator_state(self.data_rng), capture_rng_state())
        may_drop = not self.context.is_distributed  # ranks cannot leave a step half-reduced
        total_loss = torch.zeros((), device=self.context.device)
        started = last_report = time.perf_counter()
        next_batch = None
        for micro_step in range(self.accumulation_steps):
            now = time.perf_counter()
            if micro_step:
                budget.micro_step_seconds = (now - started) / micro_step
            if self.context.is_main and now - started >= PROGRESS_AFTER_SECONDS and now - last_report >= PROGRESS_EVERY_SECONDS:
                last_report = now
                yield StepProgress(self.state.step + 1, "train", micro_step, self.accumulation_steps, now - started)
            rest_of_step = budget.micro_step_seconds * (self.accumulation_steps - micro_step)
            if may_drop and stop_signals.requested:
                return None, math.nan, "interrupted"
            if may_drop and budget.cannot_fit(rest_of_step, self._closing_seconds(budget)):
                return None, math.nan, "time_budget"
            if next_batch is None:
                next_batch = self._batch("train", self.data_rng)
            inputs, targets = next_batch
            is_last = micro_step == self.accumulation_steps - 1
            # Gradients are all-reduced only on the micro-step that precedes the update.
            sync = contextlib.nullcontext() if is_last or not self.context.is_distributed else model.no_sync()
            with sync:
                with self._autocast():
                    _, loss = model(inputs, targets)
                    loss = loss / self.accumulation_steps
                if not is_last:
                    next_batch = self._batch("train", self.data_rng)
                self.scaler.scale(loss).backward()
            total_loss += loss.detach()
        if self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)
        max_norm = self.config.optim.grad_clip if self.config.optim.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        budget.micro_step_seconds = (time.perf_counter() - started) / self.accumulation_steps
        return total_loss, float(grad_norm), None

    def _apply_update(self) -> None:
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    def _agree(self, loss: Optional[torch.Tensor], stop: bool, over_time: bool) -> tuple[float, bool, bool]:
        """The loss averaged over ranks, and whether any rank wants to stop: all ranks decide alike."""
        loss_value = float(loss) if loss is not None else math.nan
        if not self.context.is_distributed:
            return loss_value, stop, over_time
        device = self.context.device
        status = torch.tensor([loss_value, float(stop), float(over_time)], device=device)
        dist.all_reduce(status)
        loss_sum, stops, over = status.tolist()
        return loss_sum / self.context.world_size, stops > 0, over > 0

    def _closing_seconds(self, budget: _TimeBudget) -> float:
        """The closing evaluation (both splits, this rank's share) and save, measured or estimated."""
        return budget.closing_seconds(math.ceil(self.config.train.eval_iters / self.context.world_size), self._save_estimate())

    def _save_estimate(self) -> float:
        """Until a save is timed: trained weights and AdamW's two moments at a modest disk speed."""
        weight_bytes = sum(
            parameter.numel() * parameter.element_size() for parameter in self.model.parameters() if parameter.requires_grad
        )
        return 3 * weight_bytes / ASSUMED_SAVE_BYTES_PER_SECOND

    def _batch(self, split: str, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self._to_device(self._sample_windows(split, rng))

    def _sample_windows(self, split: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return self.dataset.sample_batch(split, self.config.train.batch_size, self.model.config.block_size, rng)

    def _to_device(self, windows: tuple[np.ndarray, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.context.device
        x, y = torch.from_numpy(windows[0]), torch.from_numpy(windows[1])
        if device.type == "cuda":
            # Pinned host memory lets the copy overlap with the kernels already queued.
            return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
        return x.to(device), y.to(device)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        from hellogpt.hardware import autocast_context

        return autocast_context(self.context.device, self.dtype)

    def _estimate_losses(
        self, batches: int, stop_signals: _StopSignals
    ) -> Generator[TrainingEvent, None, Optional[dict[str, float]]]:
        """Mean loss over `batches` fixed batches per split (shared out among ranks); None when a stop
        arrives (single process), so that a long evaluation never delays Ctrl-C."""
        seed, world_size = self.config.train.seed, self.context.world_size
        may_stop = not self.context.is_distributed
        self.model.eval()
        losses: dict[str, float] = {}
        started = last_report = time.perf_counter()
        try:
            for split_index, split in enumerate(("train", "val")):
                rng = np.random.default_rng((seed, EVAL_SEED_OFFSET, split_index))
                total = torch.zeros((), device=self.context.device, dtype=_loss_sum_dtype(self.context.device))
                for batch_index in range(batches):
                    windows = self._sample_windows(split, rng)
                    if batch_index % world_size != self.context.rank:
                        continue
                    now = time.perf_counter()
                    if self.context.is_main and now - started >= PROGRESS_AFTER_SECONDS and now - last_report >= PROGRESS_EVERY_SECONDS:
                        last_report = now
                        yield StepProgress(self.state.step, "eval", split_index * batches + batch_index, 2 * batches, now - started)
                    if may_stop and stop_signals.requested:
                        return None
                    total += self._eval_loss(windows).to(total.dtype)
                if self.context.is_distributed:
                    dist.all_reduce(total)
                losses[split] = float(total) / batches
        finally:
            self.model.train()
        return losses

    @torch.no_grad()
    def _eval_loss(self, windows: tuple[np.ndarray, np.ndarray]) -> torch.Tensor:
        inputs, targets = self._to_device(windows)
        with self._autocast():
            _, loss = self.model(inputs, targets)
        return loss

    def _evaluate_and_save(
        self, finishing: bool, stop_signals: _StopSignals, closing: bool = False
    ) -> Generator[TrainingEvent, None, bool]:
        """Evaluate, then save: a new best to the checkpoint, other states per always_save_checkpoint, and the
        final state always. False when a stop cut the evaluation short (it then runs first on --resume).

        A closing evaluation under --max-time uses as many of its batches as fit in its share of the budget.
        """
        state, train_config, budget = self.state, self.config.train, self.budget
        wanted = train_config.eval_iters
        batches = wanted
        if closing and not self.context.is_distributed:
            batches = budget.affordable_eval_batches(wanted, self._save_estimate())
        eval_started = time.perf_counter()
        losses = yield from self._estimate_losses(batches, stop_signals)
        if losses is None:
            state.pending_eval = True
            return False
        budget.eval_batch_seconds = (time.perf_counter() - eval_started) / (2 * math.ceil(batches / self.context.world_size))
        state.pending_eval, state.last_eval_step = False, state.step
        state.train_loss, state.val_loss = losses["train"], losses["val"]
        # A shortened evaluation is noisier than the full ones: it may be the first best, never a better one.
        is_best = state.best_val_loss is None or (batches == wanted and losses["val"] < state.best_val_loss)
        if is_best:
            state.best_val_loss = losses["val"]
        with_sample = finishing and self.context.is_main and not budget.cannot_fit(budget.eval_batch_seconds, 0.0)
        sample = self._sample_text() if with_sample else None
        if self.context.is_main:
            yield EvalEvent(state.step, losses["train"], losses["val"], state.best_val_loss or losses["val"], sample)
        if is_best:
            yield from self._save("best")
        elif train_config.always_save_checkpoint or finishing:
            yield from self._save("eval" if not finishing else "final")
        return True

    def _save(self, reason: str) -> Iterator[TrainingEvent]:
        """Write a checkpoint (main rank); every rank contributes its sampler and RNG states first.

        A new best goes to the checkpoint path; so does every save with always_save_checkpoint. Otherwise
        the latest state goes beside it (NAME.latest.pt), so the best model is never overwritten.
        """
        saved_started = time.perf_counter()
        rank_states = [self._step_start_states or (generator_state(self.data_rng), capture_rng_state())]
        if self.context.is_distributed:
            gathered: list[Any] = [None] * self.context.world_size
            dist.all_gather_object(gathered, rank_states[0])
            rank_states = list(gathered)
        if not self.context.is_main:
            return
        writes_checkpoint = reason == "best" or self.config.train.always_save_checkpoint
        path = self.checkpoint_path if writes_checkpoint else self.latest_path
        sampler_states, rng_states = [sampler for sampler, _ in rank_states], [rng for _, rng in rank_states]
        save_checkpoint(path, self._checkpoint(sampler_states, rng_states))
        if writes_checkpoint:
            self.latest_path.unlink(missing_ok=True)  # older than what was just written
        self.state.last_checkpoint_step = self.state.step
        self.state.checkpoint_paths.append(str(path))
        self.budget.save_seconds = time.perf_counter() - saved_started
        yield CheckpointEvent(step=self.state.step, path=str(path), reason=reason)

    def _checkpoint(self, sampler_states: list[dict[str, Any]], rng_states: list[dict[str, Any]]) -> Checkpoint:
        state = self.state
        return Checkpoint(
            model_args=self.model.config,
            # A LoRA run saves its adapters only: the base is named by `base`, with its hash.
            model=adapter_state_dict(self.model) if self.lora is not None else self.model.state_dict(),
            lora=self.lora.to_dict() if self.lora is not None else None,
            base=self.base,
            optimizer=self.optimizer.state_dict(),
            scaler=self.scaler.state_dict() if self.scaler.is_enabled() else None,
            step=state.step,
            train_loss=state.train_loss,
            val_loss=state.val_loss,
            best_val_loss=state.best_val_loss,
            config=_config_with_architecture(self.config, self.model.config),
            tokenizer=self.dataset.tokenizer.description(),
            rng=rng_states[0],
            # Each rank's own: torchrun seeds ranks apart, and rank r's dropout draws from its own GPU's generator.
            rank_rngs=rng_states if self.context.is_distributed else None,
            sampler={"kind": "numpy", "world_size": self.context.world_size, "states": sampler_states},
            origin=self.origin,
            run_name=self.run_name,
            pending_eval=state.pending_eval,
        )

    def _sample_text(self) -> str:
        """A short continuation from the model as trained, to show what it learned (its own RNG: no side effects)."""
        from hellogpt.generate import stream_tokens

        tokenizer, sample = self.dataset.tokenizer, self.config.sample
        generator = torch.Generator(device=self.context.device)
        generator.manual_seed(sample.seed if sample.seed is not None else self.config.train.seed)
        self.model.eval()
        try:
            # Under the run's autocast: a LoRA base may be held in bf16/fp16 beside fp32 embeddings.
            with self._autocast():
                token_ids = stream_tokens(
                    self.model,
                    _sample_prompt(tokenizer),
                    max_new_tokens=sample.max_new_tokens,
                    temperature=sample.temperature,
                    top_k=sample.top_k,
                    top_p=sample.top_p,
                    eot_id=tokenizer.eot_id,
                    vocab_size=tokenizer.vocab_size,
                    generator=generator,
                )
                produced = list(token_ids)
        finally:
            self.model.train()
        return tokenizer.decode(produced)

    def _run_started(self) -> RunStarted:
        return RunStarted(
            run_name=self.run_name,
            profile=self.profile,
            device=str(self.context.device) + (f" x{self.context.world_size}" if self.context.is_distributed else ""),
            dtype=str(self.dtype).removeprefix("torch."),
            n_params=self.model.num_parameters(),
            dataset_tokens=self.dataset.num_tokens("train"),
            start_step=self.state.step,
            max_iters=self.config.train.max_iters,
            tokens_per_step=self.tokens_per_step,
            checkpoint_path=str(self.checkpoint_path),
            config=_config_with_architecture(self.config, self.model.config),
            origin=self.origin,
        )

    def _raise_peak_flops(self, observed_flops: float) -> float:
        """A step faster than the cached peak proves the probe ran on a busy machine: the step is the new peak."""
        from hellogpt.hardware import raise_cached_peak_flops

        self.peak_flops = observed_flops
        raise_cached_peak_flops(self.context.device, self.dtype, observed_flops)
        return 1.0

    def _step_event(self, loss: float, grad_norm: float, step_seconds: float, elapsed: float) -> StepEvent:
        tokens_per_second = self.tokens_per_step / step_seconds if step_seconds > 0 else 0.0
        utilisation = None
        if self.peak_flops:
            from hellogpt.hardware import mfu

            flops_per_token = self.model.flops_per_token(self.model.config.block_size)
            utilisation = mfu(flops_per_token, tokens_per_second, self.peak_flops * self.context.world_size)
            if utilisation > 1.0 and self.config.system.peak_flops is None:
                utilisation = self._raise_peak_flops(flops_per_token * tokens_per_second / self.context.world_size)
        return StepEvent(
            step=self.state.step,
            loss=loss,
            learning_rate=learning_rate_at(self.state.step - 1, self.config.optim),
            grad_norm=grad_norm,
            ms_per_step=step_seconds * 1000.0,
            tokens_per_second=tokens_per_second,
            mfu=utilisation,
            tokens_seen=self.state.step * self.tokens_per_step,
            elapsed_seconds=elapsed,
        )

    def _divergence_message(self, loss: float, grad_norm: float) -> str:
        bad = f"loss {loss}" if not math.isfinite(loss) else f"gradient norm {grad_norm}"
        kept = (
            f"the last good checkpoint {self.checkpoint_path} (step {self.state.last_checkpoint_step}) is kept"
            if self.state.last_checkpoint_step is not None
            else "no checkpoint was written by this run"
        )
        return (
            f"training diverged: {bad} at step {self.state.step + 1}; stopped before applying it, {kept}; "
            f"lower optim.learning_rate (now {self.config.optim.learning_rate:g}) or raise optim.warmup_iters"
        )

    def _finish_message(self, reason: str) -> Optional[str]:
        if reason not in ("interrupted", "time_budget"):
            return None
        step = self.state.step
        what = "interrupted" if reason == "interrupted" else "time budget reached"
        if self.state.last_checkpoint_step != step:
            return f"{what} at step {step}: nothing new to save"
        saved = self.state.checkpoint_paths[-1]
        text = f"{what} at step {step}: saved {saved}"
        if saved == str(self.latest_path) and self.checkpoint_path.exists():
            text += f" (the latest state; the best model stays in {self.checkpoint_path})"
        if reason == "interrupted":
            text += "; continue with --resume" + (" (its evaluation runs first)" if self.state.pending_eval else "")
        return text

    def _budget_too_short_message(self, max_seconds: float) -> str:
        step = self.budget.micro_step_seconds * self.accumulation_steps
        needed = step + self._closing_seconds(self.budget)
        return (
            f"--max-time {max_seconds:g}s ended before the first step could finish: a step takes about {step:.0f} s "
            f"here and the closing evaluation and save about {needed - step:.0f} s more; nothing new was saved: "
            f"give --max-time at least {math.ceil(needed * 1.2)}s, or lower train.gradient_accumulation_steps"
        )


def _prepare_run(
    resolved: ResolvedConfig,
    context: DistributedContext,
    data_dir: Path,
    checkpoint_path: Path,
    init: Optional[dict[str, Any]],
    resume: bool,
    run_name: Optional[str],
) -> _Run:
    """Open the data, build or load the model and optimizer, seed everything."""
    from hellogpt.hardware import choose_dtype, needs_grad_scaler, peak_flops

    config = resolved.config
    dataset = _open_training_data(config, context, data_dir)
    accumulation_steps = local_accumulation_steps(config.train.gradient_accumulation_steps, context.world_size)
    resumed_path, resumed = _load_resume_checkpoint(checkpoint_path, config) if resume else (None, None)
    if resumed is not None and resumed.is_lora:
        source = _lora_weights_of(resumed, config)
    else:
        source = _weights_of(resumed) if resumed is not None else init
    if source is not None:
        _check_tokenizer_fits(source, dataset, resumed_path)
    model_config = _model_config(resolved, dataset, source, is_resume=resume)
    dataset.require_windows(model_config.block_size)
    lora = _lora_of_run(resolved, resumed, resumed_path, source)

    torch.manual_seed(config.train.seed + context.rank)
    model = GPT(model_config) if source is None else _model_on(model_config, source["model"])
    if lora is not None and source is not None:
        _add_lora(model, lora, source, config)
    model.activation_checkpointing = config.train.activation_checkpointing
    model.to(context.device)
    dtype = choose_dtype(config.system.dtype, context.device, model_config)
    optimizer = build_optimizer(model, config.optim, context.device)
    scaler = torch.amp.GradScaler(context.device.type, enabled=needs_grad_scaler(dtype))
    data_rng = np.random.default_rng(config.train.seed + context.rank)
    state = _RunState()
    if resumed is not None and resumed_path is not None:
        _load_optimizer_state(optimizer, scaler, resumed, resumed_path)
        state = _RunState(
            step=resumed.step or 0,
            best_val_loss=resumed.best_val_loss,
            train_loss=resumed.train_loss,
            val_loss=resumed.val_loss,
            last_checkpoint_step=resumed.step,
            pending_eval=resumed.pending_eval,
        )
        restore_rng_state(_restored_rng(resumed, context))
        data_rng = _restored_sampler(resumed.sampler, context, data_rng)
    if context.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    forward_model = _wrap_for_training(model, config, context)
    origin = (source or {}).get("origin") or {"kind": "scratch"}
    return _Run(
        config=config,
        profile=resolved.profile,
        context=context,
        dataset=dataset,
        model=model,
        forward_model=forward_model,
        optimizer=optimizer,
        scaler=scaler,
        dtype=dtype,
        accumulation_steps=accumulation_steps,
        data_rng=data_rng,
        checkpoint_path=checkpoint_path,
        run_name=run_name or (resumed.run_name if resumed is not None else None) or checkpoint_path.stem,
        origin=origin,
        peak_flops=_peak_flops(peak_flops, context.device, dtype, config.system.peak_flops) if context.is_main else None,
        state=state,
        lora=lora,
        base=source.get("base") if lora is not None and source is not None else None,
    )


def _open_training_data(config: RunConfig, context: DistributedContext, data_dir: Path) -> TokenDataset:
    """Open the dataset; prepare it first (main rank only) when the config names its source."""
    if context.is_main and not dataset_exists(data_dir):
        prepare_missing_dataset(config.data, data_dir)
    if context.is_distributed:
        dist.barrier()
    if not dataset_exists(data_dir):
        raise UserError(missing_dataset_message(config.data, data_dir))
    return open_dataset(data_dir)


def _load_resume_checkpoint(checkpoint_path: Path, config: RunConfig) -> tuple[Path, Checkpoint]:
    """The newest resumable state of the run: NAME.latest.pt when newer than NAME.pt."""
    path = resume_source(checkpoint_path)
    if not path.exists():
        raise UserError(f"--resume: checkpoint {checkpoint_path} does not exist; train without --resume to start it")
    checkpoint = load_checkpoint(path)
    checkpoint.require_resumable(path)
    step = checkpoint.step or 0
    if step >= config.train.max_iters and not checkpoint.pending_eval:
        raise UserError(
            f"{path} is already at step {step}, train.max_iters is {config.train.max_iters}: "
            f"raise it to continue, e.g. --set train.max_iters={max(step * 2, 1)}"
        )
    return path, checkpoint


def _weights_of(checkpoint: Checkpoint) -> dict[str, Any]:
    """A checkpoint as the starting weights `train(init=...)` takes."""
    return {
        "model_args": checkpoint.model_args.to_dict(),
        "model": checkpoint.model,
        "tokenizer": checkpoint.tokenizer,
        "origin": checkpoint.origin,
    }


def _lora_weights_of(checkpoint: Checkpoint, config: RunConfig) -> dict[str, Any]:
    """A LoRA checkpoint to resume: its base, loaded frozen and checked against the recorded hash, and its adapters."""
    from hellogpt.train.lora import frozen_dtype, verified_base

    return {
        "model_args": checkpoint.model_args.to_dict(),
        "model": verified_base(checkpoint.base or {}, frozen_dtype(config.system, checkpoint.model_args)),
        "adapters": checkpoint.model,
        "tokenizer": checkpoint.tokenizer,
        "origin": checkpoint.origin,
        "base": checkpoint.base,
    }


def _lora_of_run(
    resolved: ResolvedConfig, resumed: Optional[Checkpoint], resumed_path: Optional[Path], source: Optional[dict[str, Any]]
) -> Optional[LoraSpec]:
    """The adapters of this run: a resumed LoRA checkpoint's own (the config may not contradict them), else the
    `lora` section when enabled, which needs pretrained weights under it."""
    from hellogpt.train.lora import lora_spec

    config = resolved.config.lora
    if resumed is not None and resumed.is_lora:
        saved = LoraSpec.from_dict(resumed.lora or {})
        wanted = lora_spec(config)
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
    return lora_spec(config)


def _model_on(model_config: GPTConfig, state_dict: dict[str, torch.Tensor]) -> GPT:
    """The GPT around the given weights (assigned: no random init, no second copy), dropout from `model_config`."""
    model = gpt_from_state_dict(model_config, strip_wrapper_prefixes(state_dict))
    return model.train()


def _add_lora(model: GPT, lora: LoraSpec, source: dict[str, Any], config: RunConfig) -> None:
    """Adapters on the frozen base (restored ones when resuming), the base held in its dtype."""
    from hellogpt.train.lora import frozen_dtype

    try:
        add_adapters(model, lora)
        if source.get("adapters") is not None:
            load_adapter_state_dict(model, source["adapters"])
    except ValueError as error:
        raise UserError(f"LoRA: {error}: check lora.targets") from None
    hold_frozen_weights_in(model, frozen_dtype(config.system, model.config))


def _load_optimizer_state(
    optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, checkpoint: Checkpoint, path: Path
) -> None:
    try:
        optimizer.load_state_dict(checkpoint.optimizer or {})
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


def _restored_sampler(
    saved: Optional[dict[str, Any]], context: DistributedContext, fallback: np.random.Generator
) -> np.random.Generator:
    """This rank's data sampler as saved; a run resumed on another number of ranks keeps fresh seeds."""
    if not saved or saved.get("world_size") != context.world_size:
        return fallback
    return generator_from_state(saved["states"][context.rank])


def _restored_rng(checkpoint: Checkpoint, context: DistributedContext) -> dict[str, Any]:
    """This rank's global RNGs as saved; rank 0's when the run was saved on another number of ranks."""
    rank_rngs = checkpoint.rank_rngs or []
    return rank_rngs[context.rank] if len(rank_rngs) == context.world_size else (checkpoint.rng or {})


def _wrap_for_training(model: GPT, config: RunConfig, context: DistributedContext) -> nn.Module:
    """torch.compile (auto = on CUDA only) and DistributedDataParallel around the model."""
    wrapped: nn.Module = model
    compile_setting = config.system.compile
    if compile_setting is True or (compile_setting == "auto" and context.device.type == "cuda"):
        wrapped = torch.compile(model)
    if context.is_distributed:
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [context.local_rank] if context.device.type == "cuda" else None
        wrapped = DistributedDataParallel(wrapped, device_ids=device_ids)
    return wrapped


def _peak_flops(measure: Any, device: torch.device, dtype: torch.dtype, override: Optional[float]) -> Optional[float]:
    """Peak FLOP/s for MFU; a failing probe only costs the MFU column."""
    try:
        return float(measure(device, dtype, override=override))
    except (RuntimeError, OSError, ValueError):
        return None


def _loss_sum_dtype(device: torch.device) -> torch.dtype:
    """float64 for summing eval losses, except on MPS, which has no float64 tensors."""
    return torch.float32 if device.type == "mps" else torch.float64


def _config_with_architecture(config: RunConfig, model_config: GPTConfig) -> dict[str, Any]:
    """The run's config as JSON with the model section the model really has (vocabulary resolved, tuned shape)."""
    dumped = config.model_dump(mode="json")
    dumped["model"] = model_config.to_dict()
    return dumped


def _sample_prompt(tokenizer: Any) -> list[int]:
    if tokenizer.eot_id is not None:
        return [tokenizer.eot_id]
    for text in SAMPLE_PROMPT_CHARS:
        ids = tokenizer.encode(text)
        if ids:
            return ids[:1]
    return [0]

