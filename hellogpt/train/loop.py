"""The training run: an object with a stop button, whose `events()` train and report, printing nothing.

One run serves `train` (from scratch or `--resume`), `tune` (from given weights) and every rank of torchrun:

    with TrainingRun(resolved, data_dir=..., checkpoint_path=...) as run:
        for event in run.events():     # RunStarted, StepEvent, ..., and RunFinished last
            ...                        # whoever owns the signals calls run.request_stop() on Ctrl-C

Checkpoints are written at evaluation time; a stop request drops the step in flight (or abandons the evaluation)
at the next micro-batch boundary and saves, all torchrun ranks at the same boundary (`stopping.py`); a NaN/inf
loss stops before the bad update is applied. Leaving the `with` block tears down (on torchrun, all ranks leave
together after a finished run), so nobody has to read past RunFinished.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any, Callable, Generator, Iterator, Optional

from hellogpt.checkpoints.format import Checkpoint
from hellogpt.config.layers import ResolvedConfig
from hellogpt.data.chat_template import CHATML_TEMPLATE, is_chat_tokenizer
from hellogpt.hardware.devices import dtype_name
from hellogpt.hardware.probes.peak import mfu, raise_cached_peak_flops
from hellogpt.model.lora import adapter_state_dict
from hellogpt.train.budget import TimeBudget, estimated_save_seconds
from hellogpt.train.distributed import (
    DistributedContext,
    check_replicas_agree,
    gather_from_ranks,
    setup_distributed,
    teardown_distributed,
)
from hellogpt.train.evaluation import Evaluator
from hellogpt.train.events import CheckpointEvent, EvalEvent, RunEnd, RunFinished, RunStarted, StepEvent, TrainingEvent
from hellogpt.train.messages import budget_too_short_message, divergence_message, finish_message
from hellogpt.train.readings import Reading, StepReadings
from hellogpt.train.resume import CheckpointLayout
from hellogpt.train.schedule import learning_rate_at
from hellogpt.train.setup import Preparing, RunParts, build_run, prepare_quietly
from hellogpt.train.step import UpdateStep
from hellogpt.train.stopping import AgreedStop


class TrainingRun:
    """A context manager: entering sets the run up (data, model, resume state), `events()` trains,
    `request_stop()` asks it to stop after the step in flight, and leaving (or `close()`) tears it down."""

    def __init__(
        self,
        resolved: ResolvedConfig,
        *,
        data_dir: Path,
        checkpoint_path: Path,
        init: Optional[dict[str, Any]] = None,
        resume: bool = False,
        max_seconds: Optional[float] = None,
        run_name: Optional[str] = None,
        preparing: Preparing = prepare_quietly,
    ) -> None:
        """`init` starts from given weights (for tune): `model_args`, `model` (a state dict whose tensors the model
        takes over, trained in place, not copied), optionally `tokenizer` (a description, checked against the
        dataset's), `origin` (recorded as is) and, for a LoRA tune (lora.enabled), `base` (the reference a LoRA
        checkpoint records). `resume` continues the run saved at `checkpoint_path` exactly. `preparing` wraps the
        preparation of a missing dataset (the CLI shows a status there)."""
        if resume and init is not None:
            raise ValueError("resume continues a checkpoint; init starts from other weights: pass one of them")
        self._resolved = resolved
        self._data_dir, self._checkpoint_path = Path(data_dir), Path(checkpoint_path)
        self._init, self._resume, self._run_name = init, resume, run_name
        self._max_seconds = max_seconds
        self._preparing = preparing
        self._stop = threading.Event()
        self._context: Optional[DistributedContext] = None
        self._loop: Optional[_Loop] = None
        self.finished: Optional[RunFinished] = None

    def __enter__(self) -> "TrainingRun":
        self._context = setup_distributed(self._resolved.config.system.device)
        try:
            parts = build_run(
                self._resolved,
                self._context,
                data_dir=self._data_dir,
                checkpoint_path=self._checkpoint_path,
                init=self._init,
                resume=self._resume,
                run_name=self._run_name,
                preparing=self._preparing,
            )
        except BaseException:
            self.close()
            raise
        self._loop = _Loop(parts, self._checkpoint_path, AgreedStop(self._stop.is_set, self._context))
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def request_stop(self) -> None:
        """Drop the step in flight at its next micro-batch boundary (under torchrun, where all ranks agree) and save;
        safe from a signal handler."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def is_distributed(self) -> bool:
        """Whether this process is one rank of several (it must never leave the run alone); known once entered."""
        return self._context is not None and self._context.is_distributed

    @property
    def is_main(self) -> bool:
        """Whether this process shows the run (rank 0, or a single process); known once entered."""
        return self._context is None or self._context.is_main

    def events(self) -> Iterator[TrainingEvent]:
        """Train, yielding events; the last one is always RunFinished (on every rank: each process exits as the run ended)."""
        if self._loop is None:
            raise RuntimeError("TrainingRun.events() runs inside `with TrainingRun(...) as run:`")
        for event in self._loop.events(self._max_seconds):
            if isinstance(event, RunFinished):
                self.finished = event
            yield event

    def close(self) -> None:
        """Leave the process group: after a finished run, together with the other ranks."""
        context, self._context = self._context, None
        if context is not None:
            teardown_distributed(context, leave_together=self.finished is not None)


def train(resolved: ResolvedConfig, **options: Any) -> Iterator[TrainingEvent]:
    """A whole run as a stream of events, set up and torn down around them (for scripts and tests; it listens to
    no signals: whoever owns them uses `TrainingRun` and calls `request_stop`)."""
    with TrainingRun(resolved, **options) as run:
        yield from run.events()


class _Loop:
    """The loop's decisions: when to step, log, evaluate, save and stop; the work is done by the parts it holds."""

    def __init__(self, parts: RunParts, checkpoint_path: Path, stop_requested: Callable[[], bool]) -> None:
        config = parts.config
        self.parts, self.config, self.context = parts, config, parts.context
        self.progress = parts.progress
        self.stop_requested = stop_requested
        self.layout = CheckpointLayout(
            checkpoint_path, config.train.always_save_checkpoint, has_saved=self.progress.last_checkpoint_step is not None
        )
        self.step = UpdateStep(
            model=parts.model,
            forward_model=parts.forward_model,
            optimizer=parts.optimizer,
            scaler=parts.scaler,
            batches=parts.batches,
            data_rng=parts.data_rng,
            context=parts.context,
            dtype=parts.dtype,
            accumulation_steps=parts.accumulation_steps,
            optim=config.optim,
        )
        self.evaluator = Evaluator(parts.model, parts.batches, parts.context, parts.dtype, config.train.seed)
        self.readings = StepReadings(parts.context, parts.optimizer, parts.scaler.is_enabled())
        self.budget = TimeBudget()
        # Host time spent in the steps since the last StepEvent: their mean is the logged step time.
        self._logged_seconds, self._logged_steps = 0.0, 0

    def events(self, max_seconds: Optional[float]) -> Iterator[TrainingEvent]:
        """Steps, logging, evaluation, checkpoints, and the reason it ended."""
        config, progress, is_main = self.config, self.progress, self.context.is_main
        max_iters = config.train.max_iters
        start_step = progress.step
        self.budget = TimeBudget(max_seconds)
        if is_main:
            yield self._run_started()
        reason, message = RunEnd.COMPLETED, None
        if progress.pending_eval:
            # Resumed from a stop on a step whose evaluation had not run yet: it runs first.
            if not (yield from self._evaluate_and_save(progress.step >= max_iters)):
                reason = RunEnd.INTERRUPTED
        while reason == RunEnd.COMPLETED and progress.step < max_iters:
            step_started = time.perf_counter()
            outcome = yield from self.step.run(progress.step, self.stop_requested, self.budget, self._closing_seconds)
            if outcome.dropped is not None:  # between micro-batches (a stop on every rank, the budget in a single process)
                self.step.drop()
                reason = outcome.dropped
                break
            next_fits = not self.budget.cannot_fit(time.perf_counter() - step_started, self._closing_seconds())
            stop, over_time = self.stop_requested(), not next_fits
            step = progress.step + 1
            finishing = step >= max_iters
            eval_due = step % config.train.eval_interval == 0 or finishing
            log_due = is_main and (step % config.train.log_interval == 0 or step == start_step + 1)
            self.readings.record(step, outcome.loss, outcome.grad_norm)  # type: ignore[arg-type]
            reading = None
            if self.readings.reads_every_step or log_due or eval_due or stop or over_time:
                # Read before applying: a bad step found here is never applied (earlier ones were skipped on the device).
                reading = self.readings.read(stop, over_time)
                stop, over_time = reading.stop, reading.over_time
                if reading.diverged:
                    progress.step = reading.step - 1
                    reason, message = RunEnd.DIVERGED, self._divergence_message(reading)
                    break
            self.step.apply(self.readings.skip_flag())
            progress.step = step
            self._logged_seconds += time.perf_counter() - step_started
            self._logged_steps += 1
            if log_due and reading is not None:
                yield self._step_event(reading)
            if stop:
                reason, progress.pending_eval = RunEnd.INTERRUPTED, eval_due
                break
            if over_time and not finishing:
                reason = RunEnd.TIME_BUDGET
                break
            if eval_due and not (yield from self._evaluate_and_save(finishing, closing=over_time)):
                reason = RunEnd.INTERRUPTED
        if reason == RunEnd.TIME_BUDGET:
            if progress.step == start_step and not progress.pending_eval:
                message = self._budget_too_short_message(max_seconds or 0.0)
            elif progress.last_eval_step != progress.step or progress.pending_eval:
                if not (yield from self._evaluate_and_save(True, closing=True)):
                    reason = RunEnd.INTERRUPTED
            elif progress.last_checkpoint_step != progress.step:
                yield from self._save(RunEnd.TIME_BUDGET)
        if reason == RunEnd.INTERRUPTED and (progress.last_checkpoint_step != progress.step or progress.pending_eval):
            if progress.step > start_step or progress.pending_eval:
                yield from self._save(RunEnd.INTERRUPTED)
        check_replicas_agree(self.parts.model, self.context, progress.step)
        wall = self.budget.elapsed()
        tokens = (progress.step - start_step) * self.parts.tokens_per_step
        if message is None and is_main:  # the other ranks know that a save happened, not where it went
            message = finish_message(reason, progress, self.layout.checkpoint_path, self.layout.latest_path)
        yield RunFinished(
            step=progress.step,
            reason=reason,
            best_val_loss=progress.best_val_loss,
            wall_seconds=wall,
            tokens_seen=progress.step * self.parts.tokens_per_step,
            tokens_per_second=tokens / wall if wall > 0 else 0.0,
            checkpoint_paths=tuple(dict.fromkeys(progress.checkpoint_paths)),
            message=message,
        )

    # ------------------------------------------------------------ evaluation and checkpoints

    def _evaluate_and_save(self, finishing: bool, closing: bool = False) -> Generator[TrainingEvent, None, bool]:
        """Evaluate, then save: a new best to the checkpoint, other states per always_save_checkpoint, and the
        final state always. False when a stop cut the evaluation short (it then runs first on --resume).

        A closing evaluation under --max-time uses as many of its batches as fit in its share of the budget.
        """
        progress, budget, wanted = self.progress, self.budget, self.config.train.eval_iters
        batches = wanted
        if closing and not self.context.is_distributed:
            batches = budget.affordable_eval_batches(wanted, estimated_save_seconds(self.parts.model))
        eval_started = time.perf_counter()
        losses = yield from self.evaluator.losses(batches, progress.step, self.stop_requested)
        if losses is None:
            progress.pending_eval = True
            return False
        budget.eval_batch_seconds = (time.perf_counter() - eval_started) / (2 * math.ceil(batches / self.context.world_size))
        progress.pending_eval, progress.last_eval_step = False, progress.step
        progress.train_loss, progress.val_loss = losses["train"], losses["val"]
        # A shortened evaluation is noisier than the full ones: it may be the first best, never a better one.
        is_best = progress.best_val_loss is None or (batches == wanted and losses["val"] < progress.best_val_loss)
        if is_best:
            progress.best_val_loss = losses["val"]
        with_sample = finishing and self.context.is_main and not budget.cannot_fit(budget.eval_batch_seconds, 0.0)
        sample = self.evaluator.sample_text(self.parts.dataset.tokenizer, self.config.sample) if with_sample else None
        if self.context.is_main:
            yield EvalEvent(progress.step, losses["train"], losses["val"], progress.best_val_loss or losses["val"], sample)
        if is_best:
            yield from self._save("best")
        elif self.config.train.always_save_checkpoint or finishing:
            yield from self._save("eval" if not finishing else "final")
        return True

    def _save(self, reason: str) -> Iterator[TrainingEvent]:
        """Write a checkpoint (main rank); every rank contributes its sampler and RNG states first."""
        saved_started = time.perf_counter()
        rank_states = gather_from_ranks(self.step.states_to_save(), self.context)
        # On every rank: whether a stop still has to save is decided alike on all of them (the save is collective).
        self.progress.last_checkpoint_step = self.progress.step
        if not self.context.is_main:
            return
        path = self.layout.write(reason, self._checkpoint([sampler for sampler, _ in rank_states], [rng for _, rng in rank_states]))
        self.progress.checkpoint_paths.append(str(path))
        self.budget.save_seconds = time.perf_counter() - saved_started
        yield CheckpointEvent(step=self.progress.step, path=str(path), reason=reason)

    def _checkpoint(self, sampler_states: list[dict[str, Any]], rng_states: list[dict[str, Any]]) -> Checkpoint:
        parts, progress = self.parts, self.progress
        return Checkpoint(
            model_args=parts.model.config,
            # A LoRA run saves its adapters only: the base is named by `base`, with its hash.
            model=adapter_state_dict(parts.model) if parts.lora is not None else parts.model.state_dict(),
            lora=parts.lora.to_dict() if parts.lora is not None else None,
            base=parts.base,
            optimizer=parts.optimizer.state_dict(),
            scaler=parts.scaler.state_dict() if parts.scaler.is_enabled() else None,
            step=progress.step,
            train_loss=progress.train_loss,
            val_loss=progress.val_loss,
            best_val_loss=progress.best_val_loss,
            config=self._config_with_architecture(),
            tokenizer=parts.dataset.tokenizer.description(),
            chat_template=CHATML_TEMPLATE if is_chat_tokenizer(parts.dataset.tokenizer) else None,
            rng=rng_states[0],
            # Each rank's own: torchrun seeds ranks apart, and rank r's dropout draws from its own GPU's generator.
            rank_rngs=rng_states if self.context.is_distributed else None,
            sampler={"kind": "numpy", "world_size": self.context.world_size, "states": sampler_states},
            origin=parts.origin,
            run_name=parts.run_name,
            pending_eval=progress.pending_eval,
            dtype=dtype_name(parts.dtype),
        )

    def _config_with_architecture(self) -> dict[str, Any]:
        """The run's config as JSON with the model section the model really has (vocabulary resolved, tuned shape)."""
        dumped = self.config.model_dump(mode="json")
        dumped["model"] = self.parts.model.config.to_dict()
        return dumped

    # ------------------------------------------------------------ time budget

    def _closing_seconds(self) -> float:
        """The closing evaluation (both splits, this rank's share) and save, measured or estimated."""
        wanted = math.ceil(self.config.train.eval_iters / self.context.world_size)
        return self.budget.closing_seconds(wanted, estimated_save_seconds(self.parts.model))

    def _budget_too_short_message(self, max_seconds: float) -> str:
        step_seconds = self.budget.micro_step_seconds * self.parts.accumulation_steps
        return budget_too_short_message(max_seconds, step_seconds, self._closing_seconds())

    def _divergence_message(self, reading: Reading) -> str:
        learning_rate = self.config.optim.learning_rate
        return divergence_message(reading, self.progress, self.layout.checkpoint_path, learning_rate)

    # ------------------------------------------------------------ events

    def _run_started(self) -> RunStarted:
        parts, context = self.parts, self.context
        return RunStarted(
            run_name=parts.run_name,
            profile=parts.profile,
            device=str(context.device) + (f" x{context.world_size}" if context.is_distributed else ""),
            dtype=dtype_name(parts.dtype),
            n_params=parts.model.num_parameters(),
            dataset_tokens=parts.dataset.num_tokens("train"),
            start_step=self.progress.step,
            max_iters=self.config.train.max_iters,
            tokens_per_step=parts.tokens_per_step,
            checkpoint_path=str(self.layout.checkpoint_path),
            config=self._config_with_architecture(),
            origin=parts.origin,
        )

    def _step_event(self, reading: Reading) -> StepEvent:
        """The logged step: its loss and gradient norm, and the mean time of the steps since the last log line."""
        step_seconds = self._logged_seconds / max(self._logged_steps, 1)
        self._logged_seconds, self._logged_steps = 0.0, 0
        tokens_per_second = self.parts.tokens_per_step / step_seconds if step_seconds > 0 else 0.0
        return StepEvent(
            step=reading.step,
            loss=reading.loss,
            learning_rate=learning_rate_at(reading.step - 1, self.config.optim),
            grad_norm=reading.grad_norm,
            ms_per_step=step_seconds * 1000.0,
            tokens_per_second=tokens_per_second,
            mfu=self._utilisation(tokens_per_second),
            tokens_seen=reading.step * self.parts.tokens_per_step,
            elapsed_seconds=self.budget.elapsed(),
        )

    def _utilisation(self, tokens_per_second: float) -> Optional[float]:
        """MFU against the measured matmul peak; a step faster than the cached peak proves the probe ran on a busy
        machine, so the step becomes the new peak (unless system.peak_flops set a figure)."""
        parts = self.parts
        if not parts.peak_flops:
            return None
        flops_per_token = parts.model.flops_per_token(parts.model.config.block_size)
        world_size = self.context.world_size
        utilisation = mfu(flops_per_token, tokens_per_second, parts.peak_flops * world_size)
        if utilisation > 1.0 and self.config.system.peak_flops is None:
            parts.peak_flops = flops_per_token * tokens_per_second / world_size
            raise_cached_peak_flops(self.context.device, parts.dtype, parts.peak_flops)
            return 1.0
        return utilisation
