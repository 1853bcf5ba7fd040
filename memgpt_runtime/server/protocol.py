"""Request bodies of the OpenAI API (and vLLM's extras) checked and turned into the engine's generation options.

Pydantic checks the shapes; `Job`-building functions check the values, each message naming the field, the range and
the value received, as vllm-project/vllm `entrypoints/openai/protocol.py` validators do. A field this server does
not implement (tools, a JSON response format, best_of > 1, logit_bias, suffix) or does not know is refused with a
400 that says so, never ignored. OpenAI's defaults apply where the request is silent (temperature 1, top_p 1, top_k
off; max_tokens 16 for completions, for chat the model's own max_new_tokens or else the rest of the context), except
that a model's own generation config, when it samples with its own temperature, top_p or top_k, comes first (as
vLLM does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import BadRequest

MAX_LOGPROBS = 20  # top alternatives per token, as OpenAI's top_logprobs
MAX_STOP = 16  # stop strings per request
MAX_N = 128  # choices per request (the engine's slots bound it further)
MAX_LOOKUP = 64  # prompt lookup: drafted tokens per step and n-gram size (each drafted token is one more position)
COMPLETION_DEFAULT_TOKENS = 16  # OpenAI's default max_tokens for /v1/completions


class _Body(BaseModel):
    # strict: a bool is no integer and "5" no number, as in the JSON the caller meant
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(_Body):
    include_usage: bool | None = None
    continuous_usage_stats: bool | None = None


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class Message(_Body):
    role: str
    content: str | list[TextPart] | None = None
    name: str | None = None


class _Sampling(_Body):
    """The parameters both routes share."""

    model: str | None = None
    max_tokens: int | None = None
    n: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    best_of: int | None = None
    use_beam_search: bool | None = False
    length_penalty: float | None = None
    early_stopping: bool | Literal["never"] | None = None
    min_tokens: int | None = None
    return_tokens_as_token_ids: bool | None = None  # vLLM: logprobs name tokens "token_id:ID" instead of their text
    prompt_lookup_num_tokens: int | None = None  # transformers' prompt-lookup decoding: tokens drafted per step
    max_matching_ngram_size: int | None = None  # the longest n-gram it matches (default 2)
    user: str | None = None


class ChatRequest(_Sampling):
    messages: list[Message]
    max_completion_tokens: int | None = None
    logprobs: bool | None = False
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    parallel_tool_calls: bool | None = None


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool | None = False
    logprobs: int | None = None
    suffix: str | None = None


class TokenizeRequest(_Body):
    model: str | None = None
    prompt: str | None = None
    content: str | None = None  # llama.cpp's name for the text
    messages: list[Message] | None = None
    add_special_tokens: bool | None = None
    add_generation_prompt: bool | None = True


class DetokenizeRequest(_Body):
    model: str | None = None
    tokens: list[int]


@dataclass
class Job:
    """A checked request: what to generate and how to answer."""

    prompts: list[list[int]]  # token ids of each prompt
    options: dict[str, Any]  # generation options for the engine (GenerationConfig names)
    n: int  # choices per prompt
    copies: bool  # greedy with n > 1: one generation, answered n times
    beam: bool
    stop: list[str]
    logprobs: int | None  # top alternatives per token (0 = the chosen token only); None = off
    stream: bool
    include_usage: bool
    max_tokens: int | None  # None = the rest of the context
    max_tokens_asked: bool  # False: max_tokens is a default, cut at the rest of the context
    token_ids: bool = False  # logprobs name tokens "token_id:ID"
    echo_texts: list[str] = field(default_factory=list)  # completions with echo: each prompt's text


def parse(model: type[BaseModel], body: bytes) -> BaseModel:
    """The JSON `body` as `model`, or a 400 naming the first field at fault."""
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as exc:
        error = exc.errors()[0]
        if error["type"] == "json_invalid":
            raise BadRequest(f"the request body is not valid JSON ({error['msg']})") from None
        if not error["loc"]:
            raise BadRequest("the request body must be a JSON object") from None
        # a union's member names (str, list[int]) are no part of the field's path
        path = [str(p) for p in error["loc"] if isinstance(p, int) or p.isidentifier() and p not in _TYPE_NAMES]
        where = ".".join(path)
        if error["type"] == "extra_forbidden":
            raise BadRequest(f"unknown or unsupported parameter '{where}'", param=where) from None
        if error["type"] == "missing":
            raise BadRequest(f"'{where}' is required", param=where) from None
        raise BadRequest(f"invalid '{where}': {error['msg']}, got {_short(error.get('input'))}", param=where) from None


_TYPE_NAMES = {"str", "int", "float", "bool", "list", "dict", "none", "literal", "function-plain"}


def chat_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Messages for the chat template: text content only; the `developer` role is the system role."""
    if not messages:
        raise BadRequest("messages must hold at least one message", param="messages")
    out = []
    for i, m in enumerate(messages):
        if m.role not in ("system", "developer", "user", "assistant"):
            raise BadRequest(
                f"messages[{i}].role '{m.role}' is not supported (system, developer, user, assistant)",
                param=f"messages.{i}.role",
            )
        content = m.content
        if isinstance(content, list):
            kinds = {p.type for p in content} - {"text"}
            if kinds:
                raise BadRequest(
                    f"messages[{i}].content holds {sorted(kinds)[0]!r} parts; only text is supported",
                    param=f"messages.{i}.content",
                )
            content = "\n".join(p.text or "" for p in content)
        message = {"role": "system" if m.role == "developer" else m.role, "content": content or ""}
        if m.name is not None:
            message["name"] = m.name
        out.append(message)
    return out


def refuse_unsupported(req: _Sampling) -> None:
    """400 for every parameter this server does not implement."""
    if req.best_of is not None and req.best_of > 1:
        raise BadRequest("best_of > 1 is not supported; use n, or use_beam_search with n as the width", param="best_of")
    if req.logit_bias:
        raise BadRequest("logit_bias is not supported", param="logit_bias")
    if isinstance(req, ChatRequest):
        if req.tools or req.functions:
            raise BadRequest("tools and functions are not supported", param="tools" if req.tools else "functions")
        if req.tool_choice not in (None, "none") or req.function_call not in (None, "none"):
            raise BadRequest("tool_choice is not supported", param="tool_choice")
        if req.response_format is not None and req.response_format.get("type") != "text":
            raise BadRequest(
                f"response_format {req.response_format.get('type')!r} is not supported; only 'text'",
                param="response_format",
            )
    if isinstance(req, CompletionRequest) and req.suffix:
        raise BadRequest("suffix is not supported", param="suffix")
    if req.stream_options is not None:
        if not req.stream:
            raise BadRequest("stream_options is only allowed when stream is true", param="stream_options")
        if req.stream_options.continuous_usage_stats:
            raise BadRequest("stream_options.continuous_usage_stats is not supported", param="stream_options")


def build_job(req: _Sampling, prompts: list[list[int]], model_defaults: dict[str, Any], vocab_size: int) -> Job:
    """The engine options of a checked request (the prompts are already token ids)."""
    refuse_unsupported(req)
    chat = isinstance(req, ChatRequest)
    n = _int(req.n, "n", 1, MAX_N, default=1)
    max_tokens = req.max_completion_tokens if chat and req.max_completion_tokens is not None else req.max_tokens
    max_tokens = _int(
        max_tokens, "max_completion_tokens" if chat and req.max_completion_tokens is not None else "max_tokens", 1, None
    )
    asked = max_tokens is not None
    if max_tokens is None:
        # as vLLM: completions take OpenAI's 16; chat the model's own max_new_tokens, else the rest of the context
        max_tokens = model_defaults.get("max_new_tokens") if chat else COMPLETION_DEFAULT_TOKENS
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stop) > MAX_STOP or any(not s for s in stop):
        raise BadRequest(f"stop takes up to {MAX_STOP} non-empty strings, got {len(stop)}", param="stop")
    if chat:
        logprobs = _int(req.top_logprobs, "top_logprobs", 0, MAX_LOGPROBS, default=0) if req.logprobs else None
        if req.top_logprobs is not None and not req.logprobs:
            raise BadRequest("top_logprobs needs logprobs set to true", param="top_logprobs")
    else:
        logprobs = _int(req.logprobs, "logprobs", 0, MAX_LOGPROBS)
    options: dict[str, Any] = {}
    if req.min_tokens:
        options["min_new_tokens"] = _int(req.min_tokens, "min_tokens", 0, max_tokens)
    for name in ("presence_penalty", "frequency_penalty"):
        value = _float(getattr(req, name), name, -2.0, 2.0)
        if value:
            options[name] = value
    if req.repetition_penalty is not None:
        options["repetition_penalty"] = _float(req.repetition_penalty, "repetition_penalty", 0.0, None, low_open=True)

    beam = bool(req.use_beam_search)
    copies = False
    if beam:
        for name, off in (("temperature", (0.0,)), ("top_p", (1.0,)), ("top_k", (0, -1))):
            if getattr(req, name) is not None and getattr(req, name) not in off:
                raise BadRequest(
                    f"{name} has no effect with use_beam_search (beam search is deterministic); leave it unset",
                    param=name,
                )
        if req.seed is not None:
            raise BadRequest("seed has no effect with use_beam_search; leave it unset", param="seed")
        if logprobs is not None:
            raise BadRequest("logprobs are not supported with use_beam_search", param="logprobs")
        options.update(num_beams=n, num_return_sequences=n, do_sample=False)  # a width of 1 is greedy, as in vLLM
        if req.length_penalty is not None:
            options["length_penalty"] = _float(req.length_penalty, "length_penalty", None, None)
        if req.early_stopping is not None:
            options["early_stopping"] = req.early_stopping
    else:
        for name in ("length_penalty", "early_stopping"):
            if getattr(req, name) is not None:
                raise BadRequest(f"{name} applies to beam search only; set use_beam_search", param=name)
        temperature = _float(_default(req.temperature, model_defaults, "temperature", 1.0), "temperature", 0.0, 2.0)
        top_p = _float(_default(req.top_p, model_defaults, "top_p", 1.0), "top_p", 0.0, 1.0, low_open=True)
        top_k = _int(_default(req.top_k, model_defaults, "top_k", 0), "top_k", -1, vocab_size)
        seed = _int(req.seed, "seed", 0, 2**63 - 1)
        options["num_beams"] = 1
        if temperature == 0.0:
            options.update(do_sample=False, num_return_sequences=1)
            copies = n > 1
        else:
            options.update(
                do_sample=True,
                temperature=temperature,
                top_p=top_p,
                top_k=max(top_k, 0),
                seed=seed,
                num_return_sequences=n,
            )
    if logprobs is not None:
        options["logprobs"] = logprobs
    if req.prompt_lookup_num_tokens is not None:
        if beam:
            raise BadRequest(
                "prompt_lookup_num_tokens does not apply to use_beam_search", param="prompt_lookup_num_tokens"
            )
        if n > 1 and not copies:
            raise BadRequest(
                "prompt_lookup_num_tokens needs n=1 when sampling (one sequence per request)",
                param="prompt_lookup_num_tokens",
            )
        options["prompt_lookup_num_tokens"] = _int(
            req.prompt_lookup_num_tokens, "prompt_lookup_num_tokens", 1, MAX_LOOKUP
        )
    if req.max_matching_ngram_size is not None:
        options["max_matching_ngram_size"] = _int(req.max_matching_ngram_size, "max_matching_ngram_size", 1, MAX_LOOKUP)
    include_usage = bool(req.stream and req.stream_options and req.stream_options.include_usage)
    return Job(
        prompts,
        options,
        n,
        copies,
        beam,
        stop,
        logprobs,
        bool(req.stream),
        include_usage,
        max_tokens,
        asked,
        bool(req.return_tokens_as_token_ids),
    )


def _default(value, defaults: dict[str, Any], name: str, fallback):
    if value is not None:
        return value
    return defaults.get(name, fallback) if defaults.get("do_sample") else fallback


def _int(value, name: str, low: int | None, high: int | None, default=None):
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name} must be an integer, got {_short(value)}", param=name)
    if (low is not None and value < low) or (high is not None and value > high):
        raise BadRequest(
            f"{name} must be in [{low if low is not None else '-inf'}, {high if high is not None else 'inf'}], "
            f"got {value}",
            param=name,
        )
    return value


def _float(value, name: str, low: float | None, high: float | None, low_open: bool = False, default=None):
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadRequest(f"{name} must be a finite number, got {_short(value)}", param=name)
    too_low = low is not None and (value <= low if low_open else value < low)
    if too_low or (high is not None and value > high):
        left = "(" if low_open else "["
        raise BadRequest(
            f"{name} must be in {left}{low if low is not None else '-inf'}, "
            f"{high if high is not None else 'inf'}], got {value}",
            param=name,
        )
    return float(value)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
