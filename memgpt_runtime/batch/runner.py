"""Rows on one engine: each row's request checked, tokenized and answered as the HTTP server answers it.

The request goes through the server's own code: `protocol.parse` (the same fields, types and messages), `prepare`
(tokenization, `build_job`, the limits) and `Generation` (submission, stop strings, detokenization), so a row gives
the text a server request with the same body gets, and the same error. Rows run concurrently on the engine
(continuous batching), at most `window` at a time.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from contextlib import aclosing

from starlette.concurrency import run_in_threadpool

from ..engine import Engine
from ..server import protocol as p
from ..server.errors import BadRequest
from ..server.generation import Generation
from ..server.prepare import api_error, prepare
from .rows import Row, error_row, malformed_row

# server options that make no sense for a row written to a file
REFUSED = {
    "stream": "a batch row is answered whole",
    "stream_options": "a batch row is answered whole",
    "logprobs": "a batch row returns text only",
    "top_logprobs": "a batch row returns text only",
    "echo": "a batch row returns the completion only",
}


def request_of(body: dict):
    """The server's request model of a row's fields, or the 400 the server would give."""
    for name, why in REFUSED.items():
        if body.get(name) not in (None, False):
            raise BadRequest(f"{name} is not supported in a batch row ({why})", param=name)
    if ("messages" in body) == ("prompt" in body):
        raise BadRequest("a row needs exactly one of 'prompt' (a completion) and 'messages' (a chat)", param="prompt")
    model = p.ChatRequest if "messages" in body else p.CompletionRequest
    req = p.parse(model, json.dumps(body).encode())
    if (
        model is p.CompletionRequest
        and isinstance(req.prompt, list)
        and req.prompt
        and not isinstance(req.prompt[0], int)
    ):
        raise BadRequest("a batch row takes one prompt: a string or a list of token ids", param="prompt")
    return req


class RowRunner:
    def __init__(self, lm, engine: Engine, slots: int):
        self.lm, self.engine, self.slots = lm, engine, slots

    async def run(self, row: Row) -> dict:
        """The output row of `row`: its text(s), finish reason(s) and token counts, or its error."""
        if row.error is not None:
            return malformed_row(row)
        field = "messages" if "messages" in row.body else "prompt"
        generation = None
        try:
            req = request_of(row.body)
            job, eos = await run_in_threadpool(prepare, self.lm, self.engine, self.slots, req)
            generation = Generation(self.engine, self.lm.tokenizer, job.prompts[0], job, eos)
            await generation.start()
            async with aclosing(generation.deltas()) as deltas:
                async for _ in deltas:
                    pass
        except Exception as exc:
            return error_row(row, api_error(exc, field).body()["error"])
        finally:
            if generation is not None:
                generation.cancel()
        return answer_row(row, generation)

    async def run_all(self, rows: Iterable[Row], window: int) -> AsyncIterator[dict]:
        """Output rows as they finish (not in input order), with at most `window` rows on the engine at once."""
        pending: set[asyncio.Task] = set()
        for row in rows:
            if len(pending) >= window:
                finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    yield task.result()
            pending.add(asyncio.ensure_future(self.run(row)))
        while pending:
            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                yield task.result()


def answer_row(row: Row, generation: Generation) -> dict:
    choices = generation.choices
    out = row.output_base()
    if len(choices) == 1:
        out.update(text=choices[0].text, finish_reason=choices[0].finish_reason)
    else:
        out.update(texts=[c.text for c in choices], finish_reasons=[c.finish_reason for c in choices])
    out.update(prompt_tokens=len(generation.prompt), completion_tokens=generation.completion_tokens)
    return out
