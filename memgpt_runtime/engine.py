"""The engine: one thread owns the model and a KV buffer of slots, and batches the decode steps of every
request it runs, admitting new ones and retiring finished ones between two steps (continuous batching).

Callers `submit` a prompt with its own generation options from any thread and get a `Handle` that yields the
search's `Step`s as they come (a thread iterates it, asyncio awaits `events()`) and its `result()`. Each
request's search is the same coroutine `generate()` runs (`search.calls`), so its answer is the one it would
get alone; the engine only decides whose model call runs when (`scheduler.py`) and performs them on the shared
slots (`slots.py`): a prompt chunk of one request, or one decode step of all of them. A cancelled handle
frees its slots before the next step. Models whose graph has no shared KV buffer (optimum's traced graphs,
encoder-decoders) run one request at a time on the same queue and handles. The design: docs/engine.md.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import MemgptError, PromptTooLongError, UsageError
from .prefix_store import PrefixStore
from .request import Done, Forward, GenerateResult, Request, Rewind, Select, Step, Verify
from .scheduler import QueueFull, Scheduler, Ticket, chunk_bounds
from .search import calls, drive
from .session import physical_memory
from .slots import SlotCache

__all__ = ["Cancelled", "Engine", "Handle", "QueueFull"]

DEFAULT_SLOTS = 16
KV_SHARE_OF_MEMORY = 0.25  # the slots' KV buffer may address at most this share of the machine's memory


class Cancelled(MemgptError):
    """The request was cancelled before it finished."""


class EngineClosed(MemgptError):
    """The engine was closed; no request can be submitted or finished."""


class Handle:
    """A submitted request: iterate it for its `Step`s (blocking), `await` them with `events()`, or wait for `result()`."""

    def __init__(self, engine: Engine, prompt_len: int):
        self.prompt_len = prompt_len
        self._engine = engine
        self._events: deque[Step | Done | BaseException] = deque()
        self._ready = threading.Condition()
        self._loops: list[tuple[asyncio.AbstractEventLoop, asyncio.Event, int]] = []
        self._result: GenerateResult | None = None
        self._error: BaseException | None = None
        self.cancelled = False

    def cancel(self) -> None:
        """Stop the request; its slots are free before the engine's next step. Safe to call more than once."""
        if not self.done:
            self.cancelled = True
            self._engine._wake()

    @property
    def done(self) -> bool:
        return self._result is not None or self._error is not None

    def result(self, timeout: float | None = None) -> GenerateResult:
        """The final result; raises the request's error (Cancelled, ...) or TimeoutError."""
        with self._ready:
            if not self._ready.wait_for(lambda: self.done, timeout):
                raise TimeoutError(f"the request did not finish within {timeout} s")
        if self._error is not None:
            raise self._error
        return self._result

    def __iter__(self):
        """Each `Step` as the engine makes it, then the `Done` event; raises the request's error instead."""
        while True:
            with self._ready:
                self._ready.wait_for(lambda: bool(self._events))
                event = self._events.popleft()
            if isinstance(event, BaseException):
                raise event
            yield event
            if isinstance(event, Done):
                return

    async def events(self, every: int = 1):
        """The same events as iterating, for asyncio: awaiting never blocks the event loop.

        `every`: wake the event loop when that many events wait (or the request ends), not at each step; an answer
        that is not streamed needs no wake-up per token, and each one takes a core from the model's threads.
        """
        loop, flag = asyncio.get_running_loop(), asyncio.Event()
        waiter = (loop, flag, every)
        with self._ready:
            self._loops.append(waiter)
        try:
            while True:
                with self._ready:
                    event = self._events.popleft() if self._events else None
                    if event is None:
                        flag.clear()
                if event is None:
                    await flag.wait()
                    continue
                if isinstance(event, BaseException):
                    raise event
                yield event
                if isinstance(event, Done):
                    return
        finally:
            with self._ready:
                self._loops.remove(waiter)

    # -- called by the engine thread ---------------------------------------------------------------------------

    def _push(self, event: Step | Done | BaseException) -> None:
        with self._ready:
            self._events.append(event)
            if isinstance(event, Done):
                self._result = event.result
            elif isinstance(event, BaseException):
                self._error = event
            self._ready.notify_all()
            final = not isinstance(event, Step)
            for loop, flag, every in self._loops:  # once, as the waiting events reach `every`: the flag stays set
                if final or len(self._events) == every:
                    loop.call_soon_threadsafe(flag.set)


@dataclass(eq=False)
class _Running:
    """The engine's state of one request."""

    handle: Handle
    search: Any  # the `search.calls` coroutine
    prompt: np.ndarray  # (prompt_len,) int64
    request: Request
    cross: Any = None  # an encoder-decoder's cross attention (models run one at a time)
    pending: Any = None  # the model call the search waits for: Prefill, Forward or Verify
    rows: int = 0  # slots in use (grows when a prompt row is expanded to beams or copies)
    reuse_prefix: bool = False


class Engine:
    """Continuous batching over one loaded model. Use as a context manager, or call `close()`."""

    def __init__(
        self,
        lm,
        slots: int | None = None,
        max_queue: int = 64,
        capacity: int | None = None,
        prefix_cache_bytes: int = 256 << 20,
    ):
        self.lm = lm
        session = lm.session
        self.batched = lm.encoder is None and session.kv_cache.layout == "shared"
        slots = slots if slots is not None else DEFAULT_SLOTS
        if not isinstance(slots, int) or isinstance(slots, bool) or slots < 1:
            raise UsageError(f"slots must be a whole number >= 1, got {slots!r}")
        if not isinstance(max_queue, int) or isinstance(max_queue, bool) or max_queue < 1:
            raise UsageError(f"max_queue must be a whole number >= 1, got {max_queue!r}")
        context = lm.manifest.context_length
        if self.batched:
            kv = session.kv_cache
            per_position = kv.num_layers * 2 * kv.num_kv_heads * kv.head_size * 4
            fits = int(physical_memory() * KV_SHARE_OF_MEMORY) // (max(slots, 2) * per_position)
            capacity = min(capacity or context, context, max(fits, 1))
            self._slots = SlotCache(session, slots, capacity, min_rows=session.min_rows)
        self.capacity = capacity if self.batched else context
        self._scheduler = Scheduler(slots if self.batched else 1, max_queue)
        self._prefixes = PrefixStore(prefix_cache_bytes) if self.batched else None
        self._lock = threading.Lock()  # guards the scheduler's queue between submitters and the engine thread
        self._wakeup = threading.Event()
        self._closed = False
        self._reused_tokens = 0
        self._thread = threading.Thread(target=self._loop, name="memgpt-engine", daemon=True)
        self._thread.start()

    # -- the caller's side ---------------------------------------------------------------------------------------

    def submit(self, prompt, reuse_prefix: bool = False, **options: Any) -> Handle:
        """Queue one prompt (token ids) with its generation options; raises QueueFull when the queue is full.

        `reuse_prefix`: start from the KV of a finished request whose tokens begin this prompt (the next turn of
        a chat), instead of computing it again; the answer is then the one a cache carried over would give.
        """
        if self._closed:
            raise EngineClosed("the engine is closed; create a new one")
        if (
            isinstance(prompt, np.ndarray)
            and prompt.ndim == 2
            or isinstance(prompt, (list, tuple))
            and any(isinstance(p, (list, tuple, np.ndarray)) for p in prompt)
        ):
            raise UsageError(
                "the engine takes one prompt per request (a list of token ids); submit each prompt on its own"
            )
        request, cross = self.lm.resolve(prompt, **options)
        if request.max_length > self.capacity:
            raise PromptTooLongError(
                f"the prompt plus new tokens need {request.max_length} positions but the engine's slots hold "
                f"{self.capacity}; shorten the prompt or lower max_new_tokens"
            )
        handle = Handle(self, request.prompt_len)
        running = _Running(
            handle, calls(request), request.input_ids[0], request, cross, reuse_prefix=reuse_prefix and self.batched
        )
        # one request at a time without shared slots: it runs on a cache of its own, whatever its width
        ticket = Ticket(rows=request.cache_rows if self.batched else 1, prompt_len=request.prompt_len, payload=running)
        with self._lock:
            if self._closed:
                raise EngineClosed("the engine is closed; create a new one")
            self._scheduler.submit(ticket)
        self._wake()
        return handle

    def generate(self, prompt, **options: Any) -> GenerateResult:
        """Submit and wait: the same result as `lm.generate([prompt], return_dict_in_generate=True, ...)`."""
        return self.submit(prompt, **options).result()

    def stats(self) -> dict[str, int]:
        """Requests running and waiting, and prompt tokens taken from the prefix store so far (a snapshot)."""
        with self._lock:
            return {
                "running": len(self._scheduler.running),
                "waiting": len(self._scheduler.waiting),
                "reused_tokens": self._reused_tokens,
            }

    def close(self) -> None:
        """Stop the engine thread; unfinished requests end with EngineClosed."""
        self._closed = True
        self._wake()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _wake(self) -> None:
        self._wakeup.set()

    # -- the engine thread ---------------------------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while not self._closed:
                self._wakeup.clear()
                with self._lock:
                    self._drop_cancelled()
                    placed = self._scheduler.admit()
                    busy = not self._scheduler.idle
                for ticket in placed:
                    self._start(ticket)
                if not busy:
                    self._wakeup.wait()
                    continue
                if self.batched:
                    self._iteration()
                else:
                    self._run_alone(self._scheduler.running[0])
        except BaseException as exc:  # a failure of the model itself: every request learns it, none hangs
            error = (
                exc if isinstance(exc, MemgptError) else MemgptError(f"the engine stopped: {type(exc).__name__}: {exc}")
            )
            self._closed = True
            self._fail_all(error)
            return
        self._fail_all(EngineClosed("the engine was closed before the request finished"))

    def _iteration(self) -> None:
        """One prompt chunk (the oldest request still prefilling), one run per prompt-lookup request checking its
        draft, then one decode step of every request that asks for one token."""
        group = self._scheduler.prefill_group(self.lm.session.prefill_chunk)
        if group:
            self._prefill(group)
        running = self._scheduler.decoding()
        decoding = [t for t in running if isinstance(t.payload.pending, Forward)]
        # subtle: GroupQueryAttention takes several positions over a past for one row at a time, so each draft
        # runs alone; a request that gets a Forward from it decodes with the others at the next iteration
        for t in running:
            if isinstance(t.payload.pending, Verify):
                self._advance(t, self._slots.verify(t.start, t.payload.pending.tokens[0])[None])
        if not decoding:
            return
        high = self._scheduler.high_water()
        tokens = np.zeros(high, np.int64)
        live = np.zeros(high, bool)
        for t in decoding:
            run = t.payload
            tokens[t.start : t.start + run.rows] = run.pending.tokens
            live[t.start : t.start + run.rows] = True
        logits = self._slots.decode(tokens, live)  # (high, vocab)
        for t in decoding:
            self._advance(t, logits[t.start : t.start + t.payload.rows])

    def _start(self, ticket: Ticket) -> None:
        """A placed request: run its search to its first model call (the prompt) and reuse a cached prefix."""
        run: _Running = ticket.payload
        if not self.batched:
            return
        run.pending = run.search.send(None)  # Prefill of the whole prompt
        run.rows = run.pending.input_ids.shape[0]
        if run.reuse_prefix:
            found = self._prefixes.take(run.prompt)
            if found is not None:
                kv, length = found
                self._slots.import_prefix(ticket.start, kv)
                self._slots.truncate(ticket.start, min(length, ticket.prompt_len - 1))  # at least one position left
                ticket.prefilled = int(self._slots.lengths[ticket.start])
                self._reused_tokens += ticket.prefilled

    def _prefill(self, group: list[Ticket]) -> None:
        """The next chunk of each ticket of `group` (adjacent slots) in one run; rows without a chunk (the beams
        of a ticket, not yet expanded) take scratch positions that their first real write replaces."""
        first = group[0].start
        chunk = self.lm.session.prefill_chunk
        bounds = [chunk_bounds(t.prefilled, t.prompt_len, chunk) for t in group]
        # a later chunk runs its prompt row alone (scheduler.prefill_group); first chunks span all their slots
        span = 1 if group[0].prefilled > 0 else group[-1].start + group[-1].rows - first
        ids = np.zeros((span, max(end - begin for begin, end in bounds)), np.int64)
        real = np.zeros(span, np.int64)
        for ticket, (begin, end) in zip(group, bounds):
            row = ticket.start - first
            ids[row, : end - begin] = ticket.payload.prompt[begin:end]
            real[row] = end - begin
        logits = self._slots.prefill(first, ids, real, np.maximum(real - 1, 0))  # (span, vocab)
        for ticket, (_, end) in zip(group, bounds):
            ticket.prefilled = end
            if end == ticket.prompt_len:
                row = ticket.start - first
                self._advance(ticket, logits[row : row + 1])

    def _advance(self, ticket: Ticket, logits: np.ndarray) -> None:
        """Hand a model call's logits to the request's search and run it to its next model call."""
        run: _Running = ticket.payload
        reply = logits
        try:
            while True:
                event = run.search.send(reply)
                reply = None
                if isinstance(event, Select):
                    rows = np.asarray(event.rows, np.int64)
                    self._slots.copy(ticket.start + np.arange(len(rows)), ticket.start + rows)
                    run.rows = len(rows)
                elif isinstance(event, Rewind):
                    for slot in range(ticket.start, ticket.start + run.rows):
                        self._slots.truncate(slot, int(self._slots.lengths[slot]) - event.count)
                elif isinstance(event, (Forward, Verify)):
                    run.pending = event
                    return
                elif isinstance(event, Step):
                    run.handle._push(event)
                elif isinstance(event, Done):
                    self._retire(ticket, event)
                    return
                else:
                    raise RuntimeError(f"a search asked for {type(event).__name__} after its prompt")
        except MemgptError as exc:
            self._release(ticket)
            run.handle._push(exc)

    def _retire(self, ticket: Ticket, done: Done) -> None:
        run: _Running = ticket.payload
        if run.reuse_prefix and run.rows == 1:
            length = int(self._slots.lengths[ticket.start])
            tokens = done.result.sequences[0, :length]
            self._prefixes.put(tokens, self._slots.export_prefix(ticket.start, length))
        self._release(ticket)
        run.handle._push(done)

    def _release(self, ticket: Ticket) -> None:
        with self._lock:
            self._scheduler.remove(ticket)
        if self.batched and ticket.start is not None:
            self._slots.release(range(ticket.start, ticket.start + ticket.rows))
        ticket.payload.search.close()

    def _drop_cancelled(self) -> None:
        """(with the lock) Every cancelled request leaves, waiting or running, before the next step."""
        for ticket in [*self._scheduler.waiting, *self._scheduler.running]:
            if ticket.payload.handle.cancelled:
                self._scheduler.remove(ticket)
                if self.batched and ticket.start is not None:
                    self._slots.release(range(ticket.start, ticket.start + ticket.rows))
                ticket.payload.search.close()
                ticket.payload.handle._push(Cancelled("the request was cancelled"))

    def _run_alone(self, ticket: Ticket) -> None:
        """A model without shared slots: the request runs to its end on its own cache, cancellable between steps."""
        run: _Running = ticket.payload
        try:
            steps = drive(self.lm.new_state(run.request, run.cross), run.search)
            for event in steps:
                if run.handle.cancelled:
                    steps.close()
                    run.handle._push(Cancelled("the request was cancelled"))
                    break
                run.handle._push(event)
        except MemgptError as exc:
            run.handle._push(exc)
        finally:
            with self._lock:
                self._scheduler.remove(ticket)

    def _fail_all(self, error: MemgptError) -> None:
        with self._lock:
            tickets = [*self._scheduler.waiting, *self._scheduler.running]
            for ticket in tickets:
                self._scheduler.remove(ticket)
        for ticket in tickets:
            ticket.payload.search.close()
            if not ticket.payload.handle.done:
                ticket.payload.handle._push(error)
