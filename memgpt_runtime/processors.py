"""Logits processors: pure numpy functions that rewrite one step's (rows, vocab) scores given the (rows, cur_len) ids.

Each function follows one class of transformers 4.57 `generation/logits_process.py` (named in its docstring)
and returns a new float32 array; `build_processors` chains the ones a `GenerationConfig` turns on, in the order
of `GenerationMixin._get_logits_processor`. Drawing a token from the processed scores lives in `sampling.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .config import GenerationConfig

# (ids (rows, cur_len) int64, scores (rows, vocab) float32) -> new scores (rows, vocab) float32
Processor = Callable[[np.ndarray, np.ndarray], np.ndarray]


def repetition_penalty(ids: np.ndarray, scores: np.ndarray, penalty: float) -> np.ndarray:
    """Divide positive (multiply negative) scores of every token already in `ids` by `penalty`.

    Follows `RepetitionPenaltyLogitsProcessor.__call__` (gather, rescale, scatter): a token present several
    times is penalised once; padding ids in the prompt count as present, as in transformers.
    """
    rows = np.arange(ids.shape[0])[:, None]  # (rows, 1)
    seen = scores[rows, ids]  # (rows, cur_len)
    out = scores.copy()
    out[rows, ids] = np.where(seen < 0, seen * np.float32(penalty), seen / np.float32(penalty))
    return out


def presence_frequency_penalty(
    ids: np.ndarray, scores: np.ndarray, prompt_length: int, presence: float, frequency: float
) -> np.ndarray:
    """Subtract `frequency` per occurrence and `presence` once from every token generated so far (the prompt
    does not count): OpenAI's penalties as vllm-project/vllm `model_executor/layers/utils.py` `apply_penalties`
    applies them (`logits -= frequency * counts; logits -= presence * (counts > 0)`)."""
    rows, vocab = scores.shape
    generated = ids[:, prompt_length:]  # (rows, new)
    if generated.shape[1] == 0:
        return scores
    flat = (np.arange(rows)[:, None] * vocab + generated).ravel()
    counts = np.bincount(flat, minlength=rows * vocab).reshape(rows, vocab).astype(np.float32)  # (rows, vocab)
    return scores - np.float32(frequency) * counts - np.float32(presence) * (counts > 0)


def no_repeat_ngram(ids: np.ndarray, scores: np.ndarray, size: int) -> np.ndarray:
    """Ban (-inf) every token that would complete an n-gram of `size` already present in the row's ids.

    Follows `NoRepeatNGramLogitsProcessor` / `_calc_banned_ngram_tokens`, vectorised over rows and n-grams
    instead of the per-row dict of n-grams.
    """
    cur_len = ids.shape[1]
    if cur_len < size:  # transformers: no complete n-gram yet, nothing to ban
        return scores
    windows = sliding_window_view(ids, size, axis=1)  # (rows, cur_len - size + 1, size)
    prefix = ids[:, cur_len - size + 1 :]  # (rows, size - 1): the n-gram the next token would complete
    matches = np.all(windows[:, :, :-1] == prefix[:, None, :], axis=2)  # (rows, cur_len - size + 1)
    rows, starts = np.nonzero(matches)
    out = scores.copy()
    out[rows, windows[rows, starts, -1]] = -np.inf
    return out


def ban_eos(scores: np.ndarray, eos_ids: tuple[int, ...]) -> np.ndarray:
    """Set the EOS scores to -inf (the body of `MinLengthLogitsProcessor` / `MinNewTokensLengthLogitsProcessor`)."""
    out = scores.copy()
    out[:, list(eos_ids)] = -np.inf
    return out


def min_length(ids: np.ndarray, scores: np.ndarray, length: int, eos_ids: tuple[int, ...]) -> np.ndarray:
    """Ban EOS while the sequence, prompt included, is shorter than `length` (`MinLengthLogitsProcessor`, and
    `MinNewTokensLengthLogitsProcessor` with `length` = prompt + min_new_tokens)."""
    return ban_eos(scores, eos_ids) if ids.shape[1] < length else scores


def bad_words(ids: np.ndarray, scores: np.ndarray, words: tuple[tuple[int, ...], ...]) -> np.ndarray:
    """Ban (-inf) the last token of every word whose other tokens end the row's ids (`NoBadWordsLogitsProcessor`).

    As its base `SequenceBiasLogitsProcessor`: one-token words are banned everywhere; a longer word only in
    rows that end with its prefix, and never while it is longer than the ids.
    """
    out = scores.copy()
    for word in words:
        if len(word) == 1:
            out[:, word[0]] = -np.inf
            continue
        if len(word) > ids.shape[1]:
            continue
        rows = np.all(ids[:, ids.shape[1] - len(word) + 1 :] == np.asarray(word[:-1]), axis=1)  # (rows,)
        out[rows, word[-1]] = -np.inf
    return out


def forced_token(ids: np.ndarray, scores: np.ndarray, at_length: int, tokens: tuple[int, ...]) -> np.ndarray:
    """When the ids are `at_length` long, only `tokens` may come next (score 0, the rest -inf).

    The body of `ForcedBOSTokenLogitsProcessor` (at length 1) and `ForcedEOSTokenLogitsProcessor` (at
    max_length - 1).
    """
    if ids.shape[1] != at_length:
        return scores
    out = np.full_like(scores, -np.inf)
    out[:, list(tokens)] = 0.0
    return out


def temperature(ids: np.ndarray, scores: np.ndarray, value: float) -> np.ndarray:
    """Divide the scores by `value` (`TemperatureLogitsWarper`)."""
    return scores / np.float32(value)


def top_k(ids: np.ndarray, scores: np.ndarray, k: int, min_tokens_to_keep: int = 1) -> np.ndarray:
    """Keep the scores at least as large as the k-th largest, -inf elsewhere (`TopKLogitsWarper`; ties kept)."""
    k = min(max(k, min_tokens_to_keep), scores.shape[-1])
    kth = np.partition(scores, -k, axis=-1)[:, [-k]]  # (rows, 1) the k-th largest score
    return np.where(scores < kth, np.float32(-np.inf), scores)


def top_p(ids: np.ndarray, scores: np.ndarray, p: float, min_tokens_to_keep: int = 1) -> np.ndarray:
    """Keep the smallest set of top tokens whose probability reaches `p`, -inf elsewhere (`TopPLogitsWarper`).

    As in transformers: sort ascending, drop tokens whose cumulative probability is <= 1 - p, always keep
    the `min_tokens_to_keep` most likely ones.
    """
    order = np.argsort(scores, axis=-1, kind="stable")  # (rows, vocab) ascending
    ordered = np.take_along_axis(scores, order, axis=-1)  # (rows, vocab)
    cumulative = np.cumsum(softmax(ordered), axis=-1, dtype=np.float32)  # (rows, vocab)
    remove_sorted = cumulative <= np.float32(1 - p)
    remove_sorted[:, -min_tokens_to_keep:] = False
    remove = np.empty_like(remove_sorted)
    np.put_along_axis(remove, order, remove_sorted, axis=-1)
    return np.where(remove, np.float32(-np.inf), scores)


def renormalize(ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Log-softmax the processed scores again (`LogitNormalization`, last in the chain)."""
    return log_softmax(scores)


def softmax(scores: np.ndarray) -> np.ndarray:
    """Softmax over the last axis in the dtype of `scores`; rows of -inf only never occur after our processors."""
    shifted = scores - scores.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(scores: np.ndarray) -> np.ndarray:
    """Log-softmax over the last axis (as `nn.functional.log_softmax`), keeping float32."""
    shifted = scores - scores.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def build_processors(config: GenerationConfig, prompt_length: int) -> list[Processor]:
    """The processors `config` turns on, in `_get_logits_processor` order; warpers only when sampling.

    `prompt_length` is the padded prompt width (`input_ids_seq_length` in transformers).
    """
    chain: list[Processor] = []
    eos = config.eos_token_id
    if config.repetition_penalty != 1.0:
        chain.append(partial(repetition_penalty, penalty=config.repetition_penalty))
    if config.presence_penalty != 0.0 or config.frequency_penalty != 0.0:
        # vLLM applies these right after the repetition penalty, before temperature and the top-k/top-p filters
        chain.append(
            partial(
                presence_frequency_penalty,
                prompt_length=prompt_length,
                presence=config.presence_penalty,
                frequency=config.frequency_penalty,
            )
        )
    if config.no_repeat_ngram_size > 0:
        chain.append(partial(no_repeat_ngram, size=config.no_repeat_ngram_size))
    if config.bad_words_ids:
        # transformers drops the one-token words that are an EOS id: banning EOS is min_length's job
        words = tuple(w for w in dict.fromkeys(config.bad_words_ids) if not (len(w) == 1 and w[0] in eos))
        if words:
            chain.append(partial(bad_words, words=words))
    if eos:
        # subtle: transformers' `_prepare_generated_length` replaces min_length by prompt + min_new_tokens when
        # min_new_tokens is given, then also adds MinNewTokensLengthLogitsProcessor, which bans the same ids at
        # the same steps; one processor does both
        minimum = config.min_total_length(prompt_length)
        if minimum > 0:
            chain.append(partial(min_length, length=minimum, eos_ids=eos))
    if config.forced_bos_token_id is not None:
        chain.append(partial(forced_token, at_length=1, tokens=(config.forced_bos_token_id,)))
    if config.forced_eos_token_id is not None:
        chain.append(
            partial(forced_token, at_length=config.total_length(prompt_length) - 1, tokens=config.forced_eos_token_id)
        )
    if config.do_sample:
        keep = 1  # min_tokens_to_keep for non-beam sampling (beam sampling is refused by GenerationConfig)
        if config.temperature != 1.0:
            chain.append(partial(temperature, value=config.temperature))
        if config.top_k != 0:
            chain.append(partial(top_k, k=config.top_k, min_tokens_to_keep=keep))
        if config.top_p < 1.0:
            chain.append(partial(top_p, p=config.top_p, min_tokens_to_keep=keep))
    if config.renormalize_logits:
        chain.append(renormalize)
    return chain


def apply_processors(chain: list[Processor], ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Run `chain` in order over (rows, vocab) scores with the (rows, cur_len) ids (`LogitsProcessorList`)."""
    for processor in chain:
        scores = processor(ids, scores)
    return scores
