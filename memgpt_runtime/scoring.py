"""Logits at every position of token sequences, in one run of the decoder graph where it can: for scoring,
reranking and perplexity (`perplexity.py`).

Three ways, chosen by the manifest alone: a "concat" graph returns (batch, seq, vocab) logits by itself; a
"shared" (fused) graph whose manifest names `graph.all_positions` returns them when every `last_index` holds
that value (export/every_position.py); an older fused graph is stepped one token at a time through its KV
cache, which gives the same numbers much more slowly. Encoder-decoder models are not scored here. This file
does not generate, and it keeps no state between calls.
"""

from __future__ import annotations

import numpy as np

from .errors import PromptTooLongError, UsageError
from .inputs import token_rows


def sequence_logits(session, manifest, input_ids) -> np.ndarray:
    """(batch, seq, vocab) float32 logits of every position of `input_ids` (a list of ids, equal-length lists
    or a (batch, seq) array), each row read from its first token with an empty cache."""
    if manifest.kind != "decoder-only":
        raise UsageError("logits() scores decoder-only models; this folder holds an encoder-decoder model")
    rows = token_rows(input_ids, manifest.vocab_size)
    ids = rows if isinstance(rows, np.ndarray) else np.array(_equal_rows(rows), np.int64)
    batch, length = ids.shape
    if length < 1:
        raise UsageError("logits() needs at least one token per row")
    if length > manifest.context_length:
        raise PromptTooLongError(
            f"{length} tokens do not fit the model's context of {manifest.context_length}; score shorter windows"
        )
    graph, kv = manifest.graph, manifest.kv_cache
    if kv.layout == "concat":
        return _concat(session, graph, kv, ids)
    if graph.all_positions is not None:
        return _all_positions(session, graph, kv, ids)
    return _stepped(session, ids)


def _equal_rows(rows: list[list[int]]) -> list[list[int]]:
    if len({len(r) for r in rows}) > 1:
        raise UsageError("logits() takes rows of equal length (no padding); score rows of different lengths one by one")
    return rows


def _caches(kv, batch: int, length: int, feeds: dict) -> None:
    for name in kv.past_names():
        feeds[name] = np.zeros((batch, kv.num_kv_heads, length, kv.head_size), np.float32)


def _all_positions(session, graph, kv, ids: np.ndarray) -> np.ndarray:
    """One run of a fused graph with `last_index` = all_positions: (batch * seq, vocab) logits, reshaped."""
    batch, length = ids.shape
    feeds = {
        graph.input_ids: ids,
        graph.seqlens_k: np.full(batch, length - 1, np.int32),
        graph.total_sequence_length: np.array(length, np.int32),
        graph.last_index: np.full(batch, graph.all_positions, np.int64),
    }
    _caches(kv, batch, length, feeds)  # (batch, kv_heads, capacity = length, head_size), empty
    (logits,) = session.session.run([graph.logits], feeds)
    return logits.reshape(batch, length, -1)


def _concat(session, graph, kv, ids: np.ndarray) -> np.ndarray:
    """One run of a traced graph with an empty past: it returns every position's logits."""
    batch, length = ids.shape
    feeds = {graph.input_ids: ids}
    if graph.attention_mask:
        feeds[graph.attention_mask] = np.ones((batch, length), np.int64)
    if graph.position_ids:
        feeds[graph.position_ids] = np.tile(np.arange(length, dtype=np.int64), (batch, 1))
    _caches(kv, batch, 0, feeds)
    (logits,) = session.session.run([graph.logits], feeds)
    return logits.reshape(batch, length, -1)


def _stepped(session, ids: np.ndarray) -> np.ndarray:
    """A fused graph without all_positions: the first token, then one step per token through the KV cache."""
    batch, length = ids.shape
    state = session.new_state(batch, length)
    out = np.empty((batch, length, session.vocab_size), np.float32)
    out[:, 0] = state.prefill(ids[:, :1], np.ones((batch, 1), np.int64))
    for t in range(1, length):
        out[:, t] = state.step(ids[:, t])
    return out
