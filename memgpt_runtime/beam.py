"""Beam search as a coroutine of model calls, equal token for token to transformers 4.57 `GenerationMixin._beam_search`.

It keeps transformers' static-shaped, vectorised bookkeeping: per batch item `num_beams` running beams and
`num_beams` finished-hypothesis slots, (batch, beams, max_length) id arrays, scores that carry -1e9 penalties
instead of masks. Each helper names the transformers function it follows. Beam sampling is not supported
(`GenerationConfig` refuses it); greedy and multinomial sampling live in `search.py`.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import numpy as np

from .config import GenerationConfig
from .processors import apply_processors, build_processors, log_softmax
from .request import Done, Forward, GenerateResult, Prefill, Request, Select, Step

_NEG = np.float32(-1.0e9)  # transformers' "very large negative value" used in place of masks


@dataclass
class _Hypotheses:
    """The finished slots of every batch item, sorted best first (transformers' `sequences`, `beam_scores`...)."""

    sequences: np.ndarray  # (batch, beams, max_length) int64
    scores: np.ndarray  # (batch, beams) float32, length-penalised; -1e9 for an empty slot
    lengths: np.ndarray  # (batch, beams) int64 generated tokens, EOS included (`beam_indices` != -1 count)
    finished: np.ndarray  # (batch, beams) bool (`is_sent_finished`)


def beam_calls(request: Request) -> Generator:
    """Beam search as a coroutine of model calls (`search.calls`): an empty `Step` after each call, then `Done`.

    The result holds (batch * num_return, prompt + new) int64 sequences, their (batch * num_return,) float32
    scores and lengths. Follows `_beam_search`: log_softmax, processors on log-probs, add running scores, top
    `max(2, 1 + n_eos) * num_beams` candidates over (beams * vocab), finished candidates among the top
    `num_beams` become hypotheses scored `sum_logprobs / generated_len ** length_penalty`.
    """
    config, input_ids = request.config, request.input_ids
    batch, prompt_len = input_ids.shape
    beams = config.num_beams
    max_length = request.max_length
    eos = np.asarray(config.eos_token_id, dtype=np.int64)  # (n_eos,)
    keep = max(2, 1 + len(eos)) * beams
    top_beams_mask = np.arange(keep) < beams  # (keep,) `top_num_beam_mask`
    chain = build_processors(config, prompt_len)
    lp, early = config.length_penalty, config.early_stopping

    running = np.full((batch, beams, max_length), _fill_value(config), dtype=np.int64)
    running[:, :, :prompt_len] = input_ids[:, None, :]
    # transformers starts beam 0 at 0 and the others at -1e9 so the first step only expands beam 0
    running_scores = np.zeros((batch, beams), dtype=np.float32)
    running_scores[:, 1:] = _NEG
    hyps = _Hypotheses(
        sequences=running.copy(),
        scores=np.full((batch, beams), _NEG, dtype=np.float32),
        lengths=np.zeros((batch, beams), dtype=np.int64),
        finished=np.zeros((batch, beams), dtype=bool),
    )
    improvable = np.ones((batch, 1), dtype=bool)  # `is_early_stop_heuristic_unsatisfied`

    logits = yield Prefill(input_ids, request.attention_mask)  # (batch, vocab)
    yield Select(np.repeat(np.arange(batch), beams))
    logits = np.repeat(logits, beams, axis=0)  # (batch * beams, vocab), as transformers' expanded prefill
    vocab = logits.shape[-1]
    cur_len = prompt_len
    while True:
        flat_ids = running[:, :, :cur_len].reshape(batch * beams, cur_len)
        log_probs = log_softmax(np.asarray(logits, dtype=np.float32))  # (batch * beams, vocab)
        log_probs = apply_processors(chain, flat_ids, log_probs)
        accumulated = (log_probs.reshape(batch, beams, vocab) + running_scores[:, :, None]).reshape(batch, -1)

        # `_get_top_k_continuations`: (batch, keep) candidates over the flattened (beams * vocab) scores
        top_scores, top_flat = _topk(accumulated, keep)
        top_source = top_flat // vocab  # (batch, keep) beam each candidate extends
        top_seqs = np.take_along_axis(running, top_source[:, :, None], axis=1)  # (batch, keep, max_length)
        top_seqs[:, :, cur_len] = top_flat % vocab
        # `stopping_criteria` on each candidate: EOS (`EosTokenCriteria`) or max length (`MaxLengthCriteria`)
        hits = np.isin(top_seqs[:, :, cur_len], eos) | (cur_len + 1 >= max_length)  # (batch, keep)

        # `_get_running_beams_for_next_iteration`
        alive_scores = top_scores + hits.astype(np.float32) * _NEG
        _, chosen = _topk(alive_scores, beams)  # (batch, beams)
        running = np.take_along_axis(top_seqs, chosen[:, :, None], axis=1)
        running_scores = np.take_along_axis(alive_scores, chosen, axis=1)
        source = np.take_along_axis(top_source, chosen, axis=1)  # (batch, beams)

        just_finished = hits & top_beams_mask  # only the top num_beams candidates may become hypotheses
        hyps = _update_finished(hyps, top_seqs, top_scores, just_finished, improvable, cur_len, prompt_len, lp, early)

        cur_len += 1
        yield Step()  # before the next model call, so closing here stops the model
        improvable = _still_improvable(improvable, running_scores, hyps, cur_len, max_length, prompt_len, early, lp)
        # subtle: `_beam_search_has_unfinished_sequences` stops the whole batch only when no item can improve,
        # or (early_stopping=True) every item has num_beams hypotheses, or every candidate hit a stop criterion
        all_full = bool(np.all(hyps.finished)) and early is True
        if not (np.any(improvable) and not all_full and not np.all(hits)):
            break

        beam_rows = (source + np.arange(batch)[:, None] * beams).reshape(-1)  # (batch * beams,) cache rows to keep
        if not np.array_equal(beam_rows, np.arange(batch * beams)):
            yield Select(beam_rows)
        logits = yield Forward(running[:, :, cur_len - 1].reshape(-1))

    # "prepare outputs": best num_return_sequences per item, cropped to the longest of them
    n = config.num_return_sequences
    out_len = prompt_len + int(hyps.lengths[:, :n].max())
    sequences = hyps.sequences[:, :n, :out_len].reshape(batch * n, out_len)
    scores = hyps.scores[:, :n].reshape(batch * n).astype(np.float32)
    yield Done(GenerateResult(sequences, scores, hyps.lengths[:, :n].reshape(batch * n)))


def _update_finished(
    hyps: _Hypotheses,
    top_seqs: np.ndarray,
    top_scores: np.ndarray,
    just_finished: np.ndarray,
    improvable: np.ndarray,
    cur_len: int,
    prompt_len: int,
    length_penalty: float,
    early_stopping: bool | str,
) -> _Hypotheses:
    """Merge the candidates that just finished into the sorted hypothesis slots (`_update_finished_beams`)."""
    batch, beams = hyps.scores.shape
    generated = cur_len + 1 - prompt_len  # tokens after the prompt, the new (EOS) token included
    scores = top_scores / (generated**length_penalty)  # (batch, keep)
    full = np.all(hyps.finished, axis=-1, keepdims=True) & (early_stopping is True)  # (batch, 1)
    # subtle: three separate float32 additions, as transformers, so penalised scores round identically
    scores = scores + full.astype(np.float32) * _NEG
    scores = scores + (~improvable).astype(np.float32) * _NEG
    scores = scores + (~just_finished).astype(np.float32) * _NEG

    merged_scores = np.concatenate([hyps.scores, scores], axis=1)  # (batch, beams + keep)
    _, best = _topk(merged_scores, beams)  # (batch, beams)
    merged_seqs = np.concatenate([hyps.sequences, top_seqs], axis=1)
    merged_lengths = np.concatenate([hyps.lengths, np.full(scores.shape, generated, dtype=np.int64)], axis=1)
    merged_finished = np.concatenate([hyps.finished, just_finished], axis=1)
    return _Hypotheses(
        sequences=np.take_along_axis(merged_seqs, best[:, :, None], axis=1),
        scores=np.take_along_axis(merged_scores, best, axis=1),
        lengths=np.take_along_axis(merged_lengths, best, axis=1),
        finished=np.take_along_axis(merged_finished, best, axis=1),
    )


def _still_improvable(
    improvable: np.ndarray,
    running_scores: np.ndarray,
    hyps: _Hypotheses,
    cur_len: int,
    max_length: int,
    prompt_len: int,
    early_stopping: bool | str,
    length_penalty: float,
) -> np.ndarray:
    """(batch, 1) whether the best running beam could still beat the worst finished one (`_check_early_stop_heuristic`).

    False and True use the current generated length; "never" with a positive length penalty the longest possible.
    """
    if early_stopping == "never" and length_penalty > 0.0:
        best_length = max_length - prompt_len
    else:
        best_length = cur_len - prompt_len
    best_running = running_scores[:, :1] / (best_length**length_penalty)  # (batch, 1)
    worst_finished = np.where(hyps.finished, hyps.scores.min(axis=1, keepdims=True), _NEG)  # (batch, beams)
    return improvable & np.any(best_running > worst_finished, axis=-1, keepdims=True)


def _fill_value(config: GenerationConfig) -> int:
    """The id that pads short hypotheses: transformers' `pad_token_id or eos_token_id[0] if eos_token_id else -1`.

    subtle: this reproduces its precedence, so a pad id of 0 falls through to the first EOS id.
    """
    if not config.eos_token_id:
        return -1
    return config.pad_token_id or config.eos_token_id[0]


def _topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, n) -> the k largest values and their indices per row, best first (`torch.topk`, sorted).

    Ties go to the lower index (on short rows, among the ties that `argpartition` keeps); torch leaves tie
    order unspecified, which only matters between -1e9 placeholders.
    """
    n = scores.shape[-1]
    if n >= _SAMPLED_TOPK_FROM * k:
        rows = [_topk_row(row, k) for row in scores]
        return np.stack([v for v, _ in rows]), np.stack([i for _, i in rows])
    if k < n:
        part = np.argpartition(-scores, k - 1, axis=-1)[:, :k]  # (rows, k) unordered
    else:
        part = np.broadcast_to(np.arange(n), scores.shape)
    values = np.take_along_axis(scores, part, axis=-1)
    order = np.lexsort((part, -values), axis=-1)  # by value descending, then index
    indices = np.take_along_axis(part, order, axis=-1)
    return np.take_along_axis(values, order, axis=-1), indices


_SAMPLED_TOPK_FROM = 1024  # rows at least this many times k long take the sampled path
_SAMPLE_STRIDE = 16


def _topk_row(row: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`_topk` of one long row without partitioning all of it (the beams x vocab scores of a step).

    The k-th largest of every 16th score is a value that at least k scores reach, so the k best are among the
    scores at or above it: typically a few hundred of the 200,000, then sorted exactly. The result, ties
    included, is the full method's.
    """
    sample = row[::_SAMPLE_STRIDE]
    threshold = np.partition(sample, len(sample) - k)[len(sample) - k]
    candidates = np.flatnonzero(row >= threshold)  # ascending indices, at least k of them
    values = row[candidates]
    order = np.lexsort((candidates, -values))[:k]  # by value descending, then index
    return values[order], candidates[order]
