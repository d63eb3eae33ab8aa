"""Continuous batching: concurrent requests share each forward pass of the model.

One generation thread owns the model. Between decoding steps it admits waiting sequences into free
slots of a batched KV cache (one prefill each), then runs one step for every active sequence at once,
each at its own position, with its own sampling settings, seed and stop conditions. A finished or
cancelled sequence leaves its slot at the next step. Requests live on the asyncio side: `submit`
returns a `SequenceHandle` whose `events()` yield text pieces and then how the sequence ended. A request may
ask for several prompts (each queued as if it came alone) and several samples of each (`n`): the samples of a prompt
are admitted together and share its one prefill, copied into each one's slot.

A failure while decoding one sequence (its prefill, its sampling, or a batched step it was in) fails that sequence
alone; a failure anywhere else (admission, delivery) fails every request, marks the scheduler failed (`failure`)
and calls `on_failure`, so that the server stops instead of answering requests nobody will decode.

A sequence's numbers do not depend on its neighbours, so greedy decoding gives the same text alone or
beside others: each row attends over its own positions (padded to a bucket and masked, the same alone or in a
group of rows), and the matrix products compute each row alike whatever the batch:
a startup probe finds the fewest rows from which they do (often 1 or 2: one row may take a matrix-vector
kernel), and steps with fewer live sequences are padded up to it with idle slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Optional

import torch

from hellogpt.config.schema import fresh_seed
from hellogpt.data.tokenizer import Tokenizer
from hellogpt.errors import UserError
from hellogpt.decode.cache import BatchedKVCache, prefill_slot
from hellogpt.decode.logprobs import ContextScorer, TokenLogprob, score_prompt, score_token
from hellogpt.decode.sampling import greedy_tokens
from hellogpt.decode.step import DecodingModel, decode_step
from hellogpt.decode.sequence import DecodingSequence
from hellogpt.generate import choose_decode_threads
from hellogpt.model.gpt import GPT
from hellogpt.serve.events import Event, Failed, Finished, PromptScored, SamplingSettings, TextPiece
from hellogpt.serve.steps import ATTENTION_BUCKET, StepLayout, measure_step_layout, step_rows

# How often an idle generation thread looks for a stop request (set from a signal handler, so without a lock).
IDLE_POLL_SECONDS = 0.1
# A decoding sequence's text goes to its request at most this often (its first piece and its end go at once):
# 20 updates a second read as fluid text, and each chunk wakes the event loop and the client, which on a small
# machine take a core from the decoding step (a 200-token char-model reply: 0.90x chat's speed at 50 ms, 0.85x at 20).
DELIVERY_INTERVAL_SECONDS = 0.05


class QueueFull(Exception):
    """Every slot is busy and `max_waiting` requests already wait: the client should try again later."""


class SequenceHandle:
    """The request's side of its sequences (one per choice): their events as they come, and a way to give up on
    them."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, withdraw: Callable[[SequenceHandle], None] = lambda handle: None,
        choices: int = 1,
    ) -> None:
        self.loop = loop
        self.choices = choices
        self._queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        self._withdraw = withdraw
        self.cancelled = False

    def cancel(self) -> None:
        """Leave the batch at the next step, or the queue at once (the client went away); call from `loop`."""
        if not self.cancelled:
            self.cancelled = True
            self._withdraw(self)

    async def events(self) -> AsyncIterator[Event]:
        """The events of a one-choice request: text pieces, then one `Finished` or `Failed`."""
        async for _, event in self.choice_events():
            yield event

    async def choice_events(self) -> AsyncIterator[tuple[int, Event]]:
        """(choice index, event) until every choice has ended: each choice's prompt scores (if asked), text pieces,
        then one `Finished` or `Failed`. A choice's pieces that arrived while the reader was busy come as one, so a
        slow client costs one chunk per read, not one per token."""
        pending: Optional[tuple[int, Event]] = None
        open_choices = self.choices
        while open_choices:
            index, event = pending if pending is not None else await self._queue.get()
            pending = None
            while isinstance(event, TextPiece) and not self._queue.empty():
                following_index, following = self._queue.get_nowait()
                if following_index != index or not isinstance(following, TextPiece):
                    pending = (following_index, following)
                    break
                event = TextPiece(event.text + following.text, event.tokens + following.tokens)
            yield index, event
            if isinstance(event, (Finished, Failed)):
                open_choices -= 1

    def _put(self, index: int, event: Event) -> None:
        self._queue.put_nowait((index, event))


@dataclass(eq=False)
class _Sequence:
    """One request inside the generation thread: its decoding state (`hellogpt.decode.sequence`), slot and delivery."""

    handle: SequenceHandle
    prompt_tokens: int
    state: DecodingSequence
    settings: SamplingSettings
    choice: int = 0
    slot: int = -1
    outcome: Optional[Event] = None
    pieces: list[str] = field(default_factory=list)
    scored: list[TokenLogprob] = field(default_factory=list)  # chosen tokens' log-probabilities not yet delivered
    prompt_scores: Optional[tuple[TokenLogprob, ...]] = None  # the prompt's, until delivered
    scorer: Optional[ContextScorer] = None  # the fp32 scoring model's view of this context (see `Scheduler`)
    text_delivered: bool = False

    @property
    def context(self) -> list[int]:
        return self.state.context

    @property
    def produced(self) -> int:
        return self.state.produced


class Scheduler:
    """Owns the model on one thread and decodes every admitted sequence together, step by step."""

    def __init__(
        self, model: GPT, tokenizer: Tokenizer, max_batch: int, threads: Optional[int] = None,
        max_waiting: Optional[int] = None, measure: Optional[str] = None, eot_id: Optional[int] = None,
        scoring_model: Optional[GPT] = None,
    ) -> None:
        """`threads`: the intra-op threads to choose from for decoding (timed on this thread's first steps, as
        `chat` does); None keeps torch's setting as it is. `max_waiting`: requests that may wait for a slot (None:
        any number). `eot_id`: the token that ends a reply (a chat model's end of turn; default: the tokenizer's
        end-of-text). `scoring_model`: the same weights in float32, when `model` decodes in another precision (bf16,
        int8): every log-probability a request asks for (prompt and generated tokens) comes from its forward passes
        instead of the decoding ones, so that the numbers are `hellogpt eval`'s whatever the server decodes in; the
        tokens are still drawn from `model`'s logits."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.model = model
        self.scoring_model = scoring_model
        self.tokenizer = tokenizer
        self.eot_id = eot_id if eot_id is not None else tokenizer.eot_id
        self.max_batch = max_batch
        self.max_waiting = max_waiting
        # Set when the generation thread failed outside a sequence's decoding and ended every request.
        self.failure: Optional[str] = None
        # Called (on the generation thread) after such a failure: the server stops.
        self.on_failure: Callable[[], None] = lambda: None
        self._threads = threads
        self._measure = measure  # system.measure: off keeps threads and layout to their rules, timing nothing
        self._decoding = DecodingModel(model)
        # Set on the generation thread as it starts (see `_set_up`), before `start` returns.
        self._cache: BatchedKVCache
        self.layout: StepLayout
        self.decode_threads: int
        self._ready = threading.Event()
        self._startup_error: Optional[BaseException] = None
        self._device = model.input_embeddings().weight.device
        self._waiting: deque[list[_Sequence]] = deque()  # groups: a prompt's samples, admitted together
        self._active: dict[int, _Sequence] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stopping = False
        self._last_delivery = 0.0  # when text last went to every request that had some (see `_deliver`)
        self._thread = threading.Thread(target=self._run, name="hellogpt-generation", daemon=True)

    def start(self) -> None:
        """Start the generation thread and wait until it has measured how to decode here."""
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            raise self._startup_error

    def _set_up(self) -> None:
        """All of the server's torch work runs on the generation thread, this too: libgomp keeps one team of
        threads per thread that runs parallel regions, and once the teams' threads outnumber the cores it stops
        letting idle ones spin, which made every decoding step wait for its threads to wake (GPT-2 bf16 decoded
        at 46 tokens/s instead of 76 here)."""
        if self._threads is not None:
            torch.set_num_threads(self._threads)
            choose_decode_threads(self.model, self._measure)
        self.decode_threads = torch.get_num_threads()
        self._cache = BatchedKVCache(self.model, self.max_batch, spare_slot=True)
        # How each step lays out its rows, so that a reply is the same alone or under load (measured here).
        self.layout = measure_step_layout(self._decoding, self.max_batch, self._measure)

    def request_stop(self) -> None:
        """Ask the thread to end every sequence and exit; safe from a signal handler (takes no lock)."""
        self._stopping = True

    def stop(self, timeout: Optional[float] = None) -> None:
        """End every sequence (they get a `server_shutdown` failure) and wait for the thread to exit."""
        self.request_stop()
        with self._wake:
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """Whether the generation thread runs and takes requests."""
        return self._thread.is_alive() and self.failure is None and not self._stopping

    @property
    def load(self) -> dict[str, int]:
        """How busy the scheduler is: sequences decoding and sequences waiting for a slot."""
        return {"active": len(self._active), "waiting": len(self._waiting), "max_batch": self.max_batch}

    def submit(self, prompt_ids: Sequence[int], settings: SamplingSettings) -> SequenceHandle:
        """Queue a sequence; call from the event loop that will read its events."""
        return self.submit_many([prompt_ids], settings)

    def submit_many(self, prompts: Sequence[Sequence[int]], settings: SamplingSettings, n: int = 1) -> SequenceHandle:
        """Queue `n` samples of each prompt, choice `prompt * n + sample`: each prompt waits as a request of its own,
        its samples admitted together on one prefill (at most `max_batch` per prefill). Sample j is seeded
        `seed + j` (a fresh seed each without one), so a prompt's samples are the same whether it came alone or in
        a list. Call from the event loop that will read the events."""
        if self._stopping or not self._thread.is_alive() or self.failure is not None:
            raise UserError("the server is shutting down")
        handle = SequenceHandle(asyncio.get_running_loop(), self._withdraw, choices=len(prompts) * n)
        groups: list[list[_Sequence]] = []
        for index, prompt_ids in enumerate(prompts):
            samples = [self._sequence(handle, prompt_ids, settings, index * n + sample, sample) for sample in range(n)]
            group_size = n if settings.max_tokens == 0 else self.max_batch  # scoring alone takes no slot
            groups += [samples[first : first + group_size] for first in range(0, n, group_size)]
        if self.max_waiting is not None and len(self._waiting) + len(groups) > self.max_waiting:
            raise QueueFull(
                f"{len(self._waiting)} requests already wait for a slot and this one brings {len(groups)} "
                f"(--max-waiting {self.max_waiting})"
            )
        with self._wake:
            self._waiting.extend(groups)
            self._wake.notify()
        return handle

    def _sequence(
        self, handle: SequenceHandle, prompt_ids: Sequence[int], settings: SamplingSettings, choice: int, sample: int
    ) -> _Sequence:
        seed = settings.seed + sample if settings.seed is not None else fresh_seed()
        state = DecodingSequence(
            prompt_ids, block_size=self.model.config.block_size, vocab_size=self.tokenizer.vocab_size,
            max_tokens=settings.max_tokens, temperature=settings.temperature, top_k=settings.top_k,
            top_p=settings.top_p, generator=torch.Generator(device=self._device).manual_seed(seed),
            eot_id=self.eot_id, stops=settings.stops, text=self.tokenizer,
            frequency_penalty=settings.frequency_penalty, presence_penalty=settings.presence_penalty,
        )
        scores_tokens = settings.logprobs is not None and settings.max_tokens > 0
        return _Sequence(
            handle=handle, prompt_tokens=len(prompt_ids), state=state, settings=settings, choice=choice,
            scorer=ContextScorer(self.scoring_model) if self.scoring_model is not None and scores_tokens else None,
        )

    def _withdraw(self, handle: SequenceHandle) -> None:
        """A cancelled request still waiting for a slot leaves the queue now and ends (on the event loop's thread)."""
        with self._wake:
            waiting = [group for group in self._waiting if group[0].handle is handle]
            for group in waiting:
                self._waiting.remove(group)
        for sequence in (sequence for group in waiting for sequence in group):
            handle._put(sequence.choice, Finished("stop", sequence.prompt_tokens, 0))

    def _run(self) -> None:
        try:
            self._set_up()
        except BaseException as error:  # handed to `start`, on the caller's thread
            self._startup_error = error
            return
        finally:
            self._ready.set()
        try:
            while not self._stopping:
                self._serve_once()
        except Exception as error:  # outside any one sequence: nothing here can be trusted to go on
            self.failure = _describe(error, "the generation thread failed")
            self._shut_down(Failed(self.failure, "server_error"))
            self.on_failure()
            return
        self._shut_down(Failed("the server is shutting down", "server_shutdown"))

    def _serve_once(self) -> None:
        """Admit what fits, decode one step, hand out the text, free the finished slots."""
        with self._wake:
            if not self._waiting and not self._active:
                self._wake.wait(IDLE_POLL_SECONDS)
                return
            arrivals, dropped = self._take_arrivals() if self._waiting else ([], [])
        self._step(arrivals)
        arrived = [sequence for group in arrivals for sequence in group]
        self._deliver(list(dict.fromkeys([*dropped, *arrived, *self._active.values()])))
        self._release_finished()

    def _take_arrivals(self) -> tuple[list[list[_Sequence]], list[_Sequence]]:
        """Waiting groups (a prompt's samples) that get free slots now, in order (scoring alone needs none), and
        the sequences of cancelled ones met on the way (they end without a slot); call holding the lock."""
        free = [slot for slot in range(self.max_batch) if slot not in self._active]
        arrivals: list[list[_Sequence]] = []
        dropped: list[_Sequence] = []
        taken = 0
        while self._waiting:
            group = self._waiting[0]
            if group[0].handle.cancelled:
                self._waiting.popleft()
                for sequence in group:
                    sequence.outcome = Finished("stop", sequence.prompt_tokens, 0)
                dropped += group
                continue
            needed = 0 if group[0].settings.max_tokens == 0 else len(group)
            if taken + needed > len(free):
                break
            self._waiting.popleft()
            for sequence in group if needed else ():
                sequence.slot = free[taken]
                taken += 1
            arrivals.append(group)
        return arrivals, dropped

    def _step(self, arrivals: list[list[_Sequence]]) -> None:
        """One new token for every live sequence: new ones from their prefill, the rest from one batched step."""
        for sequence in self._active.values():
            if sequence.handle.cancelled:
                sequence.outcome = sequence.outcome or Finished("stop", sequence.prompt_tokens, sequence.produced)
        for group in arrivals:
            if group[0].settings.max_tokens == 0:
                self._score_only(group)
                continue
            for sequence in group:
                self._active[sequence.slot] = sequence
            self._prefill_group(group)
        arrived = {id(sequence) for group in arrivals for sequence in group}
        decoding = {
            slot: sequence for slot, sequence in self._active.items()
            if sequence.outcome is None and id(sequence) not in arrived
        }
        full = [
            sequence for sequence in decoding.values() if sequence.state.window_is_full(self._cache.lengths[sequence.slot])
        ]
        for sequence in full:  # the window slides: the most recent tokens are prefilled again, as in chat
            del decoding[sequence.slot]
            sequence.state.slide_window()
            self._prefill(sequence)
        if decoding:
            tokens = {slot: sequence.context[-1] for slot, sequence in decoding.items()}
            rows = step_rows(list(tokens), self.max_batch, self.layout)
            try:
                logits = decode_step(
                    self._decoding, self._cache, tokens, rows=rows, chunk=self.layout.chunk,
                    attention_bucket=ATTENTION_BUCKET,
                )
            except Exception:  # which sequence failed it is unknown: each goes on from a prefill of its own
                for sequence in decoding.values():
                    self._prefill(sequence)
                return
            greedy = [slot for slot, sequence in decoding.items() if sequence.state.greedy]
            for slot, token in zip(greedy, greedy_tokens([logits[slot] for slot in greedy], self.tokenizer.vocab_size)):
                with _failing_alone(decoding[slot]):
                    if token is None:  # scores that are not finite: the sampler words the failure
                        self._sample(decoding[slot], logits[slot])
                    else:
                        self._append_token(decoding[slot], token, logits[slot])
            for slot, sequence in decoding.items():
                if not sequence.state.greedy:
                    with _failing_alone(sequence):
                        self._sample(sequence, logits[slot])

    def _score_only(self, group: list[_Sequence]) -> None:
        """A prompt scored and nothing generated (`max_tokens` 0): one forward pass, no slot."""
        leader = group[0]
        try:
            scores = tuple(self._score_prompt(leader))
        except Exception as error:
            for sequence in group:
                sequence.outcome = Failed(_describe(error), "server_error")
            return
        for sequence in group:
            sequence.prompt_scores = scores
            sequence.outcome = Finished("length", sequence.prompt_tokens, 0)

    def _score_prompt(self, sequence: _Sequence) -> list[TokenLogprob]:
        top = sequence.settings.logprobs or 0
        return score_prompt(self.scoring_model or self.model, sequence.context, top, self.tokenizer.vocab_size)

    def _prefill_group(self, group: list[_Sequence]) -> None:
        """Prefill the first sample's slot (and score its prompt, if asked), copy it into the others' slots, and draw
        each one's first token from the same logits; a failure there ends the whole group."""
        leader = group[0]
        try:
            scores = tuple(self._score_prompt(leader)) if leader.settings.score_prompt else None
            logits = prefill_slot(self.model, self._cache, leader.slot, leader.context)
            for sequence in group[1:]:
                _copy_slot(self._cache, leader.slot, sequence.slot)
        except Exception as error:
            for sequence in group:
                sequence.outcome = sequence.outcome or Failed(_describe(error), "server_error")
            return
        for sequence in group:
            sequence.prompt_scores = scores
            with _failing_alone(sequence):
                self._sample(sequence, logits)

    def _prefill(self, sequence: _Sequence) -> None:
        """Fill the sequence's slot with its context and draw its next token; a failure (out of memory on a long
        prompt, say) ends this sequence alone."""
        with _failing_alone(sequence):
            self._sample(sequence, prefill_slot(self.model, self._cache, sequence.slot, sequence.context))

    def _sample(self, sequence: _Sequence, logits: torch.Tensor) -> None:
        """Draw the sequence's next token and turn it into text (a model that gives no finite scores fails it)."""
        try:
            token = sequence.state.choose(logits)
        except UserError as error:
            sequence.outcome = Failed(str(error), "server_error")
            return
        self._append_token(sequence, token, logits)

    def _append_token(self, sequence: _Sequence, token: int, logits: torch.Tensor) -> None:
        """Append a chosen token (with its log-probability, if asked) and turn it into text, or end the sequence."""
        top = sequence.settings.logprobs
        if top is not None and token != self.eot_id:  # end-of-text ends the reply without joining it
            if sequence.scorer is not None:  # the fp32 model's logits on the same context, one cached step
                logits = sequence.scorer.next_logits(sequence.context)
            sequence.scored.append(score_token(logits, token, top, self.tokenizer.vocab_size))
        sequence.pieces.append(sequence.state.accept(token))
        if sequence.state.finish_reason is not None:
            sequence.outcome = Finished(sequence.state.finish_reason, sequence.prompt_tokens, sequence.produced)

    def _deliver(self, sequences: list[_Sequence]) -> None:
        """Hand text and outcomes to each request's event loop, one wake-up per loop: a sequence's first text and its
        end at once, the text in between to every sequence together at most every `DELIVERY_INTERVAL_SECONDS` (one
        wake-up of the event loop for all of them, not one per sequence at its own moments)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[SequenceHandle, int, Event]]] = {}
        now = time.monotonic()
        due = now - self._last_delivery >= DELIVERY_INTERVAL_SECONDS
        for sequence in sequences:
            news = any(sequence.pieces) or bool(sequence.scored) or sequence.prompt_scores is not None
            if sequence.outcome is None and not (news and (due or not sequence.text_delivered)):
                continue
            events: list[Event] = []
            if sequence.prompt_scores is not None:
                events.append(PromptScored(sequence.prompt_scores))
                sequence.prompt_scores = None
            text, scored = "".join(sequence.pieces), tuple(sequence.scored)
            sequence.pieces.clear()
            sequence.scored.clear()
            if text or scored:
                events.append(TextPiece(text, scored))
            if sequence.outcome is not None:
                events.append(sequence.outcome)
            sequence.text_delivered = sequence.text_delivered or bool(text)
            for event in events:
                by_loop.setdefault(sequence.handle.loop, []).append((sequence.handle, sequence.choice, event))
        if due and by_loop:
            self._last_delivery = now
        for loop, deliveries in by_loop.items():
            try:
                loop.call_soon_threadsafe(_put_all, deliveries)
            except RuntimeError:
                pass  # that loop has closed: nobody is listening any more

    def _release_finished(self) -> None:
        for slot in [slot for slot, sequence in self._active.items() if sequence.outcome is not None]:
            del self._active[slot]

    def _shut_down(self, outcome: Failed) -> None:
        """End every sequence, running or waiting, with `outcome` (unless it had ended): the thread is leaving."""
        with self._wake:
            ending = [*self._active.values(), *(sequence for group in self._waiting for sequence in group)]
            self._active.clear()
            self._waiting.clear()
        for sequence in ending:
            sequence.outcome = sequence.outcome or outcome
        try:
            self._deliver(ending)
        except Exception:  # delivery itself failed: the outcomes go out one by one, plainly
            for sequence in ending:
                with contextlib.suppress(RuntimeError):
                    sequence.handle.loop.call_soon_threadsafe(
                        _put_all, [(sequence.handle, sequence.choice, sequence.outcome)]
                    )


def _put_all(deliveries: list[tuple[SequenceHandle, int, Event]]) -> None:
    for handle, choice, event in deliveries:
        handle._put(choice, event)


def _copy_slot(cache: BatchedKVCache, source: int, target: int) -> None:
    """Give `target` the keys and values `source` holds (a prompt's prefill shared by its samples); past the copied
    length the target keeps zeros, as every slot must (see `BatchedKVCache`)."""
    end = min(max(cache.lengths[source], cache.lengths[target] + 1), cache.max_length)
    cache.keys[:, target, :, :end] = cache.keys[:, source, :, :end]
    cache.values[:, target, :, :end] = cache.values[:, source, :, :end]
    cache.lengths[target] = cache.lengths[source]


@contextlib.contextmanager
def _failing_alone(sequence: _Sequence) -> Iterator[None]:
    """Any error in the block ends `sequence` with a `Failed` outcome; the other sequences go on."""
    try:
        yield
    except Exception as error:
        sequence.outcome = sequence.outcome or Failed(_describe(error), "server_error")


def _describe(error: Exception, what: str = "generation failed") -> str:
    message = " ".join(str(error).split())[:300]
    return f"{what} ({type(error).__name__}{': ' + message if message else ''})"
