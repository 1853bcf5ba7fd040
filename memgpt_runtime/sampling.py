"""Drawing one token per row from processed scores with an explicit `np.random.Generator`.

The filtering itself (temperature, top-k, top-p) is in `processors.py`; this file only turns the
filtered (rows, vocab) scores into probabilities and draws, the job of `torch.multinomial` in
transformers `GenerationMixin._sample`. Same generator state in, same tokens out.
"""

from __future__ import annotations

import numpy as np

from .processors import log_softmax
from .request import TokenLogprobs


def probabilities(scores: np.ndarray) -> np.ndarray:
    """Softmax of (rows, vocab) scores in float64; -inf scores get probability exactly 0."""
    scores = scores.astype(np.float64)
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))  # (rows, vocab)
    return e / e.sum(axis=-1, keepdims=True)


def sample_tokens(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One token per row of (rows, vocab) scores, drawn by inverse CDF from one uniform per row -> (rows,) int64.

    A token whose probability is 0 (a -inf score) is never drawn: the chosen index is the number of CDF
    entries <= u, and a zero-probability token repeats its predecessor's CDF value.
    """
    cdf = np.cumsum(probabilities(scores), axis=-1)  # (rows, vocab)
    u = rng.random(cdf.shape[0]) * cdf[:, -1]  # (rows,)
    tokens = (cdf <= u[:, None]).sum(axis=-1)  # (rows,)
    # subtle: rounding can make u reach the total; fall back to the last token with non-zero probability
    last_possible = cdf.shape[1] - 1 - np.argmax((np.diff(cdf, prepend=0.0) > 0)[:, ::-1], axis=-1)
    return np.minimum(tokens, last_possible).astype(np.int64)


def greedy_tokens(scores: np.ndarray) -> np.ndarray:
    """(rows, vocab) scores -> (rows,) int64 argmax, the first index on ties (as `torch.argmax`)."""
    return scores.argmax(axis=-1).astype(np.int64)


def token_logprobs(logits: np.ndarray, tokens: np.ndarray, k: int) -> TokenLogprobs:
    """The log-probability of each row's token in (rows, vocab) raw logits, and the k most likely tokens."""
    logprobs = log_softmax(np.asarray(logits, dtype=np.float32))  # (rows, vocab)
    rows = np.arange(logprobs.shape[0])
    k = min(k, logprobs.shape[1])
    top_ids = (
        np.argpartition(-logprobs, k - 1, axis=-1)[:, :k] if k else np.zeros((len(rows), 0), np.int64)
    )  # (rows, k)
    order = np.argsort(-np.take_along_axis(logprobs, top_ids, axis=-1), axis=-1, kind="stable")
    top_ids = np.take_along_axis(top_ids, order, axis=-1).astype(np.int64)
    return TokenLogprobs(logprobs[rows, tokens], top_ids, np.take_along_axis(logprobs, top_ids, axis=-1))
