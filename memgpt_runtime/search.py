"""Token generation over a `DecoderState`: greedy and multinomial sampling here, beam search in `beam.py`.

`generate_ids` is the one entry point; it equals transformers 4.57 `generate()` token for token for the options
`GenerationConfig` carries. The model, its cache and tokenization are elsewhere (`session.py`, `tokenizer.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .beam import beam_search
from .config import GenerationConfig
from .errors import UsageError
from .processors import apply_processors, build_processors
from .sampling import greedy_tokens, sample_tokens
from .state import DecoderState

__all__ = ["DecoderState", "GenerateResult", "generate_ids"]


@dataclass(frozen=True)
class GenerateResult:
    sequences: np.ndarray  # (batch * num_return_sequences, prompt + new) int64, prompt included
    sequences_scores: np.ndarray | None = None  # (batch * num_return_sequences,) float32 for beam search, else None


def generate_ids(
    state: DecoderState,
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    config: GenerationConfig,
    rng: np.random.Generator | None = None,
    on_tokens: Callable[[np.ndarray], None] | None = None,
) -> GenerateResult:
    """Generate from (batch, prompt_len) left-padded ids and mask; greedy, sampling or beam search per `config`.

    `rng` is required when `config.do_sample` (build it from `config.seed`). `on_tokens` receives each step's
    (batch * num_return_sequences,) new tokens for greedy and sampling (pad for finished rows), not for beams.
    """
    input_ids = np.asarray(input_ids, dtype=np.int64)
    attention_mask = np.asarray(attention_mask, dtype=np.int64)
    if input_ids.ndim != 2 or input_ids.shape[1] == 0 or attention_mask.shape != input_ids.shape:
        raise UsageError(
            f"input_ids must be a non-empty (batch, prompt_len) array with a mask of the same shape, "
            f"got {input_ids.shape} and {attention_mask.shape}"
        )
    if config.total_length(input_ids.shape[1]) <= input_ids.shape[1]:
        raise UsageError(
            f"max_length ({config.total_length(input_ids.shape[1])}) leaves no room after the {input_ids.shape[1]}-token prompt; "
            "raise max_length or set max_new_tokens"
        )
    if config.num_beams > 1:
        sequences, scores = beam_search(state, input_ids, attention_mask, config)
        return GenerateResult(sequences, scores)
    if config.do_sample and rng is None:
        raise UsageError("do_sample needs a random generator: pass rng=np.random.default_rng(config.seed)")
    return GenerateResult(_greedy_or_sample(state, input_ids, attention_mask, config, rng, on_tokens))


def _greedy_or_sample(
    state: DecoderState,
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    config: GenerationConfig,
    rng: np.random.Generator | None,
    on_tokens: Callable[[np.ndarray], None] | None,
) -> np.ndarray:
    """The loop of transformers `GenerationMixin._sample`: process, pick, pad finished rows, stop when all done."""
    prompt_len = input_ids.shape[1]
    max_length = config.total_length(prompt_len)
    chain = build_processors(config, prompt_len)
    eos = np.asarray(config.eos_token_id, dtype=np.int64)  # (n_eos,)
    pad = config.pad_id

    logits = state.prefill(input_ids, attention_mask)  # (batch, vocab)
    copies = config.num_return_sequences  # > 1 only when sampling
    if copies > 1:
        # as `_expand_inputs_for_generation`: each prompt repeated, its copies adjacent
        rows = np.repeat(np.arange(input_ids.shape[0]), copies)
        state.select(rows)
        logits, input_ids = logits[rows], input_ids[rows]

    ids = np.empty((input_ids.shape[0], max_length), dtype=np.int64)  # (rows, max_length), filled as we go
    ids[:, :prompt_len] = input_ids
    unfinished = np.ones(input_ids.shape[0], dtype=bool)  # (rows,)
    cur_len = prompt_len
    while True:
        scores = apply_processors(chain, ids[:, :cur_len], np.asarray(logits, dtype=np.float32))  # (rows, vocab)
        tokens = sample_tokens(scores, rng) if config.do_sample else greedy_tokens(scores)  # (rows,)
        if len(eos):
            tokens = np.where(unfinished, tokens, pad)
        ids[:, cur_len] = tokens
        cur_len += 1
        if on_tokens is not None:
            on_tokens(tokens.copy())
        if len(eos):
            unfinished &= (tokens[:, None] != eos).all(axis=1)  # not np.isin: ~10x its cost on a cold cache
        if cur_len >= max_length or not unfinished.any():
            break
        logits = state.step(tokens)
    return ids[:, :cur_len]
