"""What a search takes and gives: the resolved `Request`, the model calls it asks for (`Prefill`, `Select`,
`Forward`, and for prompt lookup `Verify` and `Rewind`), the `Step` and `Done` events, the `GenerateResult`.

`resolve_length` is the one place the length policy lives (max_new_tokens, max_length, the default, the
model's context). The search that consumes a request is `search.py`/`beam.py`; turning a caller's ids and
options into one is `LanguageModel` in `model.py`. The design is in docs/generation.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import GenerationConfig
from .errors import PromptTooLongError, UsageError


def resolve_length(config: GenerationConfig, prompt_len: int, context: int | None = None) -> GenerationConfig:
    """`config` with `max_length` concrete (the length, prompt included, at which generation stops).

    As transformers' `_prepare_generated_length`: max_new_tokens counts after the prompt and wins over
    max_length; with neither, `default_new_tokens` new tokens, cut at the model's `context` (None = no limit).
    A length the caller asked for is refused, never cut, when it passes the context. The result has
    max_new_tokens None, so every later reader sees the one concrete max_length.
    """
    if context is not None and prompt_len >= context:
        raise PromptTooLongError(
            f"the prompt has {prompt_len} tokens but the model's context is {context}; shorten the prompt"
        )
    if config.max_new_tokens is not None:
        total = prompt_len + config.max_new_tokens
    elif config.max_length is not None:
        total = config.max_length
    else:
        total = prompt_len + config.default_new_tokens
        total = total if context is None else min(total, context)
    if total <= prompt_len:
        raise UsageError(
            f"max_length ({total}) leaves no room after the {prompt_len}-token prompt; raise max_length or set max_new_tokens"
        )
    if context is not None and total > context:
        raise PromptTooLongError(
            f"the prompt plus new tokens need {total} positions but the model's context is {context}; "
            "shorten the prompt or lower max_new_tokens"
        )
    return config.replace(max_new_tokens=None, max_length=total)


@dataclass(frozen=True)
class Request:
    """One generation, resolved once: nothing the search reads is left to default or infer.

    Build it with `Request.resolve`; the constructor only checks that the parts fit together.
    """

    input_ids: np.ndarray  # (batch, prompt_len) int64, left-padded; an encoder-decoder's decoder start tokens
    attention_mask: np.ndarray  # (batch, prompt_len) int64, 0 over padding
    config: GenerationConfig  # max_length concrete (`resolve_length`), max_new_tokens None
    rng: np.random.Generator | None = None  # the draws of sampling; None for greedy and beam search
    # positions one model call runs for the price of a decode step (the session's min_rows: a lone int4 row runs
    # beside a scratch row); prompt lookup's pacing reads it
    free_positions: int = 1

    def __post_init__(self) -> None:
        ids, mask = self.input_ids, self.attention_mask
        if not (isinstance(ids, np.ndarray) and ids.dtype == np.int64 and ids.ndim == 2 and ids.shape[1] > 0):
            raise UsageError(f"input_ids must be a non-empty (batch, prompt_len) int64 array, got {_describe(ids)}")
        if not (isinstance(mask, np.ndarray) and mask.dtype == np.int64 and mask.shape == ids.shape):
            raise UsageError(
                f"attention_mask must be an int64 array of the shape of input_ids {ids.shape}, got {_describe(mask)}"
            )
        if self.config.max_length is None or self.config.max_new_tokens is not None:
            raise UsageError("the request's config needs a concrete max_length: build it with Request.resolve")
        if self.config.max_length <= ids.shape[1]:
            raise UsageError(
                f"max_length ({self.config.max_length}) leaves no room after the {ids.shape[1]}-token prompt"
            )
        if self.config.prompt_lookup_num_tokens is not None and ids.shape[0] > 1:
            raise UsageError(
                f"prompt_lookup_num_tokens takes one prompt at a time (as transformers), got a batch of {ids.shape[0]}"
            )
        if self.config.do_sample and self.rng is None:
            raise UsageError("do_sample needs a random generator: pass rng=np.random.default_rng(config.seed)")

    @classmethod
    def resolve(
        cls,
        input_ids,
        attention_mask,
        config: GenerationConfig,
        rng: np.random.Generator | None = None,
        context: int | None = None,
        free_positions: int = 1,
    ) -> Request:
        """A request from (batch, prompt_len) ids and mask: int64 arrays, and the length fixed by `resolve_length`."""
        ids = np.asarray(input_ids, dtype=np.int64)
        mask = np.asarray(attention_mask, dtype=np.int64)
        if ids.ndim != 2 or ids.shape[1] == 0 or mask.shape != ids.shape:
            raise UsageError(
                f"input_ids must be a non-empty (batch, prompt_len) array with a mask of the same shape, "
                f"got {ids.shape} and {mask.shape}"
            )
        return cls(ids, mask, resolve_length(config, ids.shape[1], context), rng, free_positions)

    @property
    def prompt_len(self) -> int:
        return self.input_ids.shape[1]

    @property
    def max_length(self) -> int:
        """The length, prompt included, at which generation stops."""
        return self.config.max_length

    @property
    def cache_rows(self) -> int:
        """Rows of KV cache the search needs: one per beam or per returned sequence of every prompt."""
        return self.input_ids.shape[0] * max(self.config.num_beams, self.config.num_return_sequences)


@dataclass(frozen=True)
class GenerateResult:
    sequences: np.ndarray  # (batch * num_return_sequences, prompt + new) int64, prompt included
    sequences_scores: np.ndarray | None = None  # (batch * num_return_sequences,) float32 for beam search, else None
    # (batch * num_return_sequences,) int64 new tokens of each row before its padding, EOS included; a search
    # always sets it
    lengths: np.ndarray | None = None


@dataclass(frozen=True)
class Prefill:
    """A model call a search asks for: run the prompt; the reply is the (rows, vocab) logits of each last token."""

    input_ids: np.ndarray  # (rows, prompt_len) int64, left-padded
    attention_mask: np.ndarray  # (rows, prompt_len) int64


@dataclass(frozen=True)
class Select:
    """A cache operation a search asks for: row i becomes old row rows[i] (expand, reorder, drop). No reply."""

    rows: np.ndarray  # (new rows,) int64


@dataclass(frozen=True)
class Forward:
    """A model call a search asks for: one token more in every row; the reply is the (rows, vocab) logits."""

    tokens: np.ndarray  # (rows,) int64


@dataclass(frozen=True)
class Verify:
    """A model call of prompt lookup: `n` more positions in every row at once; the reply is the (rows, n, vocab)
    logits of every one of them (the last fed token's, then each drafted token's)."""

    tokens: np.ndarray  # (rows, n) int64: the row's last token, then its drafted tokens


@dataclass(frozen=True)
class Rewind:
    """A cache operation of prompt lookup: every row forgets its last `count` positions (rejected drafts). No reply."""

    count: int  # >= 1


@dataclass(frozen=True)
class TokenLogprobs:
    """One step's log-probabilities under the model's own distribution (its logits before any processor, as
    vLLM's default `raw_logprobs`); asked for with `GenerationConfig.logprobs`."""

    chosen: np.ndarray  # (rows,) float32 log-probability of each row's token
    top_ids: np.ndarray  # (rows, k) int64 the k most likely tokens, most likely first
    top: np.ndarray  # (rows, k) float32 their log-probabilities


@dataclass(frozen=True)
class Step:
    """One model call of a search is done (the prefill, or one decode step); the search waits for `next()`.

    Greedy and sampling say which token each row got; beam search, which decides only at the end, says nothing.
    """

    tokens: np.ndarray | None = None  # (rows,) int64 this step's token of each row, pad once the row finished
    live: np.ndarray | None = None  # (rows,) bool the row was still generating: its token counts (EOS included)
    logprobs: TokenLogprobs | None = None  # greedy and sampling with `logprobs` set; None otherwise


@dataclass(frozen=True)
class Done:
    """The last event of a search."""

    result: GenerateResult


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of {value.dtype} and shape {value.shape}"
    return type(value).__name__
