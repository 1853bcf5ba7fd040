"""A checked request into token ids and a `Job`, and the runtime's errors into API errors: what the HTTP server and
`memgpt batch` share, with no web framework in it (pydantic only, through `protocol.py`).

`prepare` tokenizes the prompts (chat template or plain text), builds the job with `protocol.build_job`, and refuses
what the engine cannot run (n wider than the slots, a prompt past the context) with a 400 naming the field.
"""

from __future__ import annotations

from ..engine import EngineClosed
from ..errors import MemgptError, PromptTooLongError, UsageError
from ..scheduler import QueueFull
from . import protocol as p
from .errors import APIError, BadRequest, ServerError, Unavailable


def api_error(exc: BaseException, param: str | None = None) -> APIError:
    """The HTTP answer to an error of the runtime."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, QueueFull):
        return Unavailable(f"the server is busy ({exc}); retry later", code="queue_full")
    if isinstance(exc, EngineClosed):
        return Unavailable("the server is shutting down", code="shutting_down")
    if isinstance(exc, PromptTooLongError):
        return BadRequest(str(exc), param=param, code="context_length_exceeded")
    if isinstance(exc, UsageError):
        return BadRequest(str(exc), param=param)
    if isinstance(exc, MemgptError):
        return ServerError(str(exc))
    return ServerError(f"internal error: {type(exc).__name__}")


def prepare(lm, engine, max_batch: int, req) -> tuple[p.Job, tuple[int, ...]]:
    """(worker thread) The prompts' ids, the job, the EOS ids; a 400 for anything the request gets wrong."""
    chat = isinstance(req, p.ChatRequest)
    field = "messages" if chat else "prompt"
    try:
        if chat:
            prompts = [lm.tokenizer.apply_chat_template(p.chat_messages(req.messages), add_generation_prompt=True)]
        else:
            prompts = completion_prompts(lm, req.prompt)
        job = p.build_job(req, prompts, lm.manifest.generation_defaults, lm.manifest.vocab_size)
        if not chat and req.echo:
            if job.logprobs is not None:
                raise BadRequest(
                    "echo with logprobs is not supported (the prompt's logprobs are not computed)", param="echo"
                )
            job.echo_texts = [lm.tokenizer.decode(ids, skip_special_tokens=True) for ids in prompts]
        eos = lm.generation_config(**job.options).eos_token_id
    except UsageError as exc:
        raise api_error(exc, field) from None
    rows = 1 if job.copies else job.n
    if engine.batched and rows > max_batch:
        raise BadRequest(
            f"n = {job.n} needs {rows} KV slots, this server has {max_batch} (--max-batch); lower n", param="n"
        )
    if lm.encoder is None:
        for ids in prompts:
            needed = len(ids) + (job.max_tokens if job.max_tokens_asked else 1)
            if needed > engine.capacity:
                asked = (
                    f"{job.max_tokens} for the completion" if job.max_tokens_asked else "at least 1 for the completion"
                )
                raise BadRequest(
                    f"this model's maximum context length is {engine.capacity} tokens, but {needed} were "
                    f"asked for ({len(ids)} in the {field}, {asked}); shorten the {field} or lower max_tokens",
                    param=field,
                    code="context_length_exceeded",
                )
    return job, eos


def completion_prompts(lm, prompt) -> list[list[int]]:
    if isinstance(prompt, str):
        return [lm.encode_prompt(prompt)]
    if not prompt:
        raise BadRequest("prompt is an empty list", param="prompt")
    if all(isinstance(x, int) for x in prompt):
        return [list(prompt)]
    if all(isinstance(x, str) for x in prompt):
        return [lm.encode_prompt(x) for x in prompt]
    if any(not row for row in prompt):
        raise BadRequest("prompt holds an empty list of token ids", param="prompt")
    return [list(row) for row in prompt]
