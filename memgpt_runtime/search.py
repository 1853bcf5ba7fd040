"""Token generation as a coroutine of model calls: greedy and multinomial sampling here, beam search in `beam.py`.

`calls(request)` is the search itself, pure numpy: it yields the model calls it needs (`Prefill`, `Select`,
`Forward`), receives each call's logits through `send`, and yields a `Step` after each call and `Done` at the
end (see `request.py` and docs/generation.md). Whoever owns a KV cache performs the calls: `drive` on one
`DecoderState` (what `generate()` does), the engine on its shared slots, one batched step for many searches.
`search` is `drive` over `calls`; `generate_ids` runs one to its end. They equal transformers 4.57
`generate()` token for token for the options `GenerationConfig` carries. The model, its cache and
tokenization are elsewhere (`session.py`, `tokenizer.py`); so is resolving a caller's options into a
`Request` (`model.py`).
"""

from __future__ import annotations

from collections.abc import Generator, Iterable

import numpy as np

from .beam import beam_calls
from .config import GenerationConfig
from .lookup import lookup_calls
from .processors import apply_processors, build_processors
from .request import Done, Forward, GenerateResult, Prefill, Request, Rewind, Select, Step, Verify
from .sampling import greedy_tokens, sample_tokens, token_logprobs
from .state import DecoderState

__all__ = [
    "DecoderState",
    "Done",
    "GenerateResult",
    "Request",
    "Step",
    "calls",
    "drive",
    "finish",
    "generate_ids",
    "search",
]

Call = Prefill | Select | Forward | Verify | Rewind
Calls = Generator["Call | Step | Done", "np.ndarray | None", None]


def calls(request: Request) -> Calls:
    """The coroutine of one generation: greedy, sampling or beam search per `request.config`, with prompt lookup
    when `prompt_lookup_num_tokens` is set (`lookup.py`).

    Send None to start it and after every event but `Prefill`, `Forward` and `Verify`, whose reply is the
    (rows, vocab) logits of the call ((rows, n, vocab) for `Verify`).
    """
    if request.config.num_beams > 1:
        return beam_calls(request)
    if request.config.prompt_lookup_num_tokens is not None:
        return lookup_calls(request)
    return _greedy_or_sample(request)


def drive(state: DecoderState, steps: Calls) -> Generator[Step | Done, None, None]:
    """Perform a search's model calls on `state`; yield its `Step`s and its `Done`.

    Each `next()` runs at most one model call. Closing this generator stops the search before its next call;
    the state is then left as it was, for the caller to discard.
    """
    reply = None
    try:
        while True:
            event = steps.send(reply)
            if isinstance(event, Prefill):
                reply = state.prefill(event.input_ids, event.attention_mask)
            elif isinstance(event, Forward):
                reply = state.step(event.tokens)
            elif isinstance(event, Verify):
                reply = state.verify(event.tokens)
            elif isinstance(event, Select):
                state.select(event.rows)
                reply = None
            elif isinstance(event, Rewind):
                state.rewind(event.count)
                reply = None
            else:
                reply = None
                yield event
                if isinstance(event, Done):
                    return
    finally:
        steps.close()


def search(state: DecoderState, request: Request) -> Generator[Step | Done, None, None]:
    """The steps of one generation on `state` (`drive` over `calls`)."""
    return drive(state, calls(request))


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


def _greedy_or_sample(request: Request) -> Calls:
    """The loop of transformers `GenerationMixin._sample` as steps: process, pick, pad finished rows, pause, stop
    when all rows are done."""
    config, input_ids = request.config, request.input_ids
    prompt_len, max_length = request.prompt_len, request.max_length
    chain = build_processors(config, prompt_len)
    eos = np.asarray(config.eos_token_id, dtype=np.int64)  # (n_eos,)
    pad = config.pad_id

    logits = yield Prefill(input_ids, request.attention_mask)  # (batch, vocab)
    copies = config.num_return_sequences  # > 1 only when sampling
    if copies > 1:
        # as `_expand_inputs_for_generation`: each prompt repeated, its copies adjacent
        rows = np.repeat(np.arange(input_ids.shape[0]), copies)
        yield Select(rows)
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
        logprobs = None if config.logprobs is None else token_logprobs(logits, tokens, config.logprobs)
        cur_len += 1
        lengths += live
        # subtle: the pause comes before the next model call, so closing here stops the model
        yield Step(tokens.copy(), live, logprobs)  # the caller's to keep: `tokens` also feeds the model
        if cur_len >= max_length or not unfinished.any():
            break
        logits = yield Forward(tokens)
    yield Done(GenerateResult(ids[:, :cur_len], None, lengths))
