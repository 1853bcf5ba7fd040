"""The resolved request: the length policy of `resolve_length` (one place for max_new_tokens, max_length, the
default and the context) and the checks of `Request`."""

from __future__ import annotations

import numpy as np
import pytest

from memgpt_runtime.config import GenerationConfig
from memgpt_runtime.errors import PromptTooLongError, UsageError
from memgpt_runtime.request import Request, resolve_length


@pytest.mark.parametrize(
    "options, prompt_len, context, expected",
    [
        (dict(max_new_tokens=5), 10, 100, 15),
        (dict(max_length=30), 10, 100, 30),
        (dict(max_new_tokens=5, max_length=30), 10, 100, 15),  # max_new_tokens wins, as in transformers
        (dict(), 10, 100, 30),  # transformers' default: 20 new tokens
        (dict(), 10, 25, 25),  # ... cut at the context
        (dict(default_new_tokens=128), 10, 100, 100),
        (dict(default_new_tokens=128), 10, None, 138),  # no context: no cut
        (dict(max_new_tokens=90), 10, 100, 100),  # exactly the context
    ],
)
def test_resolve_length(options, prompt_len, context, expected):
    config = resolve_length(GenerationConfig(**options), prompt_len, context)
    assert (config.max_length, config.max_new_tokens) == (expected, None)
    assert config.total_length(prompt_len) == expected


@pytest.mark.parametrize(
    "options, prompt_len, context, error, match",
    [
        (dict(max_length=10), 10, 100, UsageError, r"max_length \(10\) leaves no room"),
        (dict(max_new_tokens=91), 10, 100, PromptTooLongError, "need 101 positions but the model's context is 100"),
        (dict(max_length=101), 10, 100, PromptTooLongError, "context is 100"),
        (dict(), 100, 100, PromptTooLongError, "the prompt has 100 tokens but the model's context is 100"),
        (dict(default_new_tokens=0), 10, 100, UsageError, "default_new_tokens must be >= 1, got 0"),
    ],
)
def test_resolve_length_refuses(options, prompt_len, context, error, match):
    with pytest.raises(error, match=match):
        resolve_length(GenerationConfig(**options), prompt_len, context)


def test_request_resolves_once():
    request = Request.resolve([[0, 5, 6]], [[0, 1, 1]], GenerationConfig(max_new_tokens=4, num_beams=3))
    assert request.input_ids.dtype == np.int64 and request.attention_mask.dtype == np.int64
    assert (request.prompt_len, request.max_length, request.cache_rows) == (3, 7, 3)


def test_cache_rows_cover_the_sampled_copies():
    config = GenerationConfig(max_new_tokens=4, do_sample=True, num_return_sequences=4)
    request = Request.resolve(np.ones((2, 3)), np.ones((2, 3)), config, rng=np.random.default_rng(0))
    assert request.cache_rows == 8


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: Request(np.ones((1, 3), np.int64), np.ones((1, 3), np.int64), GenerationConfig()), "Request.resolve"),
        (lambda: Request(np.ones((1, 3)), np.ones((1, 3), np.int64), GenerationConfig(max_length=5)), "input_ids"),
        (lambda: Request.resolve(np.ones((1, 3)), np.ones((1, 4)), GenerationConfig()), "input_ids"),
        (lambda: Request.resolve(np.ones((1, 3)), np.ones((1, 3)), GenerationConfig(do_sample=True)), "rng"),
    ],
)
def test_request_refuses_what_does_not_fit(build, match):
    with pytest.raises(UsageError, match=match):
        build()
