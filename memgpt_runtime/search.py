"""Token generation over a `DecoderState` as a generator of steps: greedy and multinomial sampling here, beam
search in `beam.py`.

`search` yields a `Step` after every model call and ends with `Done` (see `request.py` and
docs/generation.md); `generate_ids` runs one to its end. Both equal transformers 4.57 `generate()` token for
token for the options `GenerationConfig` carries. The model, its cache and tokenization are elsewhere
(`session.py`, `tokenizer.py`); so is resolving a caller's options into a `Request` (`model.py`).
"""

from __future__ import annotations

from collections.abc import Generator, Iterable

import numpy as np

from .beam import beam_search
from .config import GenerationConfig
from .processors import apply_processors, build_processors
from .request import Done, GenerateResult, Request, Step
from .sampling import greedy_tokens, sample_tokens
from .state import DecoderState

__all__ = ["DecoderState", "Done", "GenerateResult", "Request", "Step", "finish", "generate_ids", "search"]


def search(state: DecoderState, request: Request) -> Generator[Step | Done, None, None]:
    """The steps of one generation: greedy, sampling or beam search per `request.config`.

    Each `next()` runs at most one model call. Closing the iterator stops the search before its next call;
    the state is then left as it was, for the caller to discard.
    """
    if request.config.num_beams > 1:
        return beam_search(state, request)
    return _greedy_or_sample(state, request)


def finish(steps: Iterable[Step | Done]) -> GenerateResult:
    """Run a search to its end and return its result."""
    for event in steps:
        if isinstance(event, Done):
            return event.result
    raise RuntimeError("the search ended without a result")


def generate_ids(
    state: DecoderState,
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    config: GenerationConfig,
    rng: np.random.Generator | None = None,
) -> GenerateResult:
    """Generate from (batch, prompt_len) left-padded ids and mask; greedy, sampling or beam search per `config`.

    `rng` is required when `config.do_sample` (build it from `config.seed`). No context limit applies here:
    the state must hold the whole length.
    """
    return finish(search(state, Request.resolve(input_ids, attention_mask, config, rng)))


def _greedy_or_sample(state: DecoderState, request: Request) -> Generator[Step | Done, None, None]:
    """The loop of transformers `GenerationMixin._sample` as steps: process, pick, pad finished rows, pause, stop
    when all rows are done."""
    config, input_ids = request.config, request.input_ids
    prompt_len, max_length = request.prompt_len, request.max_length
    chain = build_processors(config, prompt_len)
    eos = np.asarray(config.eos_token_id, dtype=np.int64)  # (n_eos,)
    pad = config.pad_id

    logits = state.prefill(input_ids, request.attention_mask)  # (batch, vocab)
    copies = config.num_return_sequences  # > 1 only when sampling
    if copies > 1:
        # as `_expand_inputs_for_generation`: each prompt repeated, its copies adjacent
        rows = np.repeat(np.arange(input_ids.shape[0]), copies)
        state.select(rows)
        logits, input_ids = logits[rows], input_ids[rows]

    ids = np.empty((input_ids.shape[0], max_length), dtype=np.int64)  # (rows, max_length), filled as we go
    ids[:, :prompt_len] = input_ids
    unfinished = np.ones(input_ids.shape[0], dtype=bool)  # (rows,)
    lengths = np.zeros(input_ids.shape[0], dtype=np.int64)  # (rows,) tokens generated before padding
    cur_len = prompt_len
    while True:
        scores = apply_processors(chain, ids[:, :cur_len], np.asarray(logits, dtype=np.float32))  # (rows, vocab)
        tokens = sample_tokens(scores, rng=request.rng) if config.do_sample else greedy_tokens(scores)  # (rows,)
        live = unfinished.copy()  # (rows,)
        if len(eos):
            tokens = np.where(unfinished, tokens, pad)
            unfinished &= (tokens[:, None] != eos).all(axis=1)  # not np.isin: ~10x its cost on a cold cache
        ids[:, cur_len] = tokens
        cur_len += 1
        lengths += live
        # subtle: the pause comes before the next model call, so closing here stops the model
        yield Step(tokens.copy(), live)  # the caller's to keep: `tokens` also feeds the model
        if cur_len >= max_length or not unfinished.any():
            break
        logits = state.step(tokens)
    yield Done(GenerateResult(ids[:, :cur_len], None, lengths))
