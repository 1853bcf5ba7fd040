"""The engine's events for one request turned into choice deltas, without blocking the event loop.

A `Generation` is one prompt on the engine: `start` submits it (in a worker thread, since resolving a request can
run an encoder), `deltas` awaits the engine's `Step`s and feeds each choice's `ChoiceText`, yielding what may be
released after each step. When every choice has finished (EOS, a stop string, the length) it returns, and its
handle is cancelled if the engine is still running it: a stop string, a client that left or an error frees the
request's slots before the engine's next step. Beam search decides at the end: its choices come whole at `Done`.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import aclosing
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool

from ..request import Done, Step
from .protocol import Job
from .text import ChoiceText, TokenText

NOT_STREAMED_WAKE_EVERY = 8  # engine steps per wake-up of the event loop for an answer sent whole


@dataclass
class Delta:
    """What one choice adds in one step: text, the tokens that made it, and its finish reason once it ends."""

    index: int  # choice index in the response: prompt * n + choice
    text: str
    tokens: list[TokenText]
    finish_reason: str | None


class Generation:
    def __init__(self, engine, tokenizer, prompt: list[int], job: Job, eos_ids, first_index: int = 0):
        self.engine, self.tokenizer, self.prompt, self.job = engine, tokenizer, prompt, job
        self.first_index = first_index
        self.choices = [ChoiceText(tokenizer, job.stop, eos_ids) for _ in range(job.n)]
        self.handle = None
        self.submitted_at = 0.0
        self.first_token_at: float | None = None
        self.finished_at: float | None = None
        self._reported: set[int] = set()  # choices whose finish reason went out

    async def start(self) -> None:
        """Submit to the engine; raises its errors (QueueFull, PromptTooLongError, UsageError) as they are."""
        await run_in_threadpool(self.submit)

    def submit(self) -> None:
        """(a worker thread) `start` without the event loop."""
        options = dict(self.job.options)
        if self.job.max_tokens_asked:
            options["max_new_tokens"] = self.job.max_tokens
        elif self.job.max_tokens is not None and len(self.prompt) + self.job.max_tokens <= self.engine.capacity:
            options["max_new_tokens"] = self.job.max_tokens
        else:
            # the rest of the context: the engine's slots may hold fewer positions than the model's context
            options["max_length"] = self.engine.capacity
        self.submitted_at = time.perf_counter()
        self.handle = self.engine.submit(self.prompt, **options)

    def cancel(self) -> None:
        if self.handle is not None and not self.handle.done:
            self.handle.cancel()

    @property
    def completion_tokens(self) -> int:
        return sum(c.count for c in self.choices)

    async def deltas(self):
        """Lists of `Delta`s as the engine steps, the last one carrying every choice's finish reason."""
        try:
            # streamed: every step goes out as it comes; otherwise the loop wakes every few steps, which delays
            # noticing a stop string by at most that many tokens of the engine's time, never the answer
            every = 1 if self.job.stream else NOT_STREAMED_WAKE_EVERY
            async with aclosing(self.handle.events(every)) as events:
                async for event in events:
                    if isinstance(event, Step):
                        if event.tokens is None:  # beam search: nothing is decided before the end
                            continue
                        if self.first_token_at is None:
                            self.first_token_at = time.perf_counter()
                        self._push(event)
                    elif isinstance(event, Done):
                        self._finish(event)
                    out = self._take()
                    if out:
                        yield out
                    if all(c.finished for c in self.choices):
                        break
        finally:
            self.finished_at = time.perf_counter()
            self.cancel()  # a stop string, a client gone or an error: the slots are free before the next step

    def _row(self, choice: int) -> int:
        return 0 if self.job.copies else choice

    def _push(self, step: Step) -> None:
        lp = step.logprobs
        for i, choice in enumerate(self.choices):
            r = self._row(i)
            if not step.live[r]:
                continue
            if lp is None:
                choice.push(int(step.tokens[r]))
            else:
                top = list(zip(lp.top_ids[r].tolist(), lp.top[r].tolist()))
                choice.push(int(step.tokens[r]), float(lp.chosen[r]), top)

    def _finish(self, done: Done) -> None:
        result = done.result
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        if self.job.beam:  # the returned sequences, best first, each fed token by token as if streamed
            start = self.handle.prompt_len
            for i, choice in enumerate(self.choices):
                for token in result.sequences[i, start : start + int(result.lengths[i])]:
                    choice.push(int(token))
        for choice in self.choices:
            choice.end("length")

    def _take(self) -> list[Delta]:
        out = []
        for i, choice in enumerate(self.choices):
            if i in self._reported:
                continue
            text, tokens = choice.take()
            if text or tokens or choice.finished:
                out.append(Delta(self.first_index + i, text, tokens, choice.finish_reason))
                if choice.finished:
                    self._reported.add(i)
        return out


async def merged(generations: list[Generation]):
    """The deltas of several generations (a completions request with a list of prompts) as they come."""
    if len(generations) == 1:
        async with aclosing(generations[0].deltas()) as deltas:
            async for out in deltas:
                yield out
        return
    queue: asyncio.Queue = asyncio.Queue(maxsize=4 * len(generations))  # bounded: each pump waits for the reader
    end = object()

    async def pump(g: Generation) -> None:
        try:
            async with aclosing(g.deltas()) as deltas:
                async for out in deltas:
                    await queue.put(out)
            await queue.put(end)
        except Exception as exc:  # the reader raises it; cancellation stays with the task
            await queue.put(exc)

    tasks = [asyncio.create_task(pump(g)) for g in generations]
    try:
        running = len(tasks)
        while running:
            item = await queue.get()
            if item is end:
                running -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield item
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for g in generations:
            g.cancel()
