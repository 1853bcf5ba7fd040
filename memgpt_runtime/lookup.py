"""Prompt-lookup decoding: greedy search or sampling that drafts its next tokens from its own sequence and checks
them all in one model call.

`draft` is transformers 4.57 `PromptLookupCandidateGenerator.get_candidates` in numpy: the first earlier
occurrence of the sequence's last n-gram (n from `max_matching_ngram_size` down to 1) proposes the tokens that
followed it. `lookup_calls` is the loop of `GenerationMixin._assisted_decoding` as a coroutine of model calls
(`request.py`): feed the last token and the draft in one `Verify`, pick a token at every position with the
processors applied over the sequence up to it, keep the draft up to the first token the model did not pick,
then that token, and `Rewind` the cache past it. Every kept token is the one plain greedy search (or sampling,
one uniform per token from the same generator) picks after the same tokens, so the answer differs from the plain
search's only where a logit does between a run of several positions and one of one. One `Step` per kept token.
What it leaves out: the cache (`DecoderState.verify`/`rewind`) and the plain search (`search.py`).
The design and its measurements: docs/lookup.md.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .processors import Processor, apply_processors, build_processors
from .request import Done, Forward, GenerateResult, Prefill, Request, Rewind, Step, Verify
from .sampling import greedy_tokens, sample_tokens, token_logprobs

DEFAULT_NGRAM = 2  # transformers: `max_matching_ngram_size or 2`
# pacing (docs/lookup.md): a draft is checked only while the share of drafts whose first token the model picks
# (a moving average, weight ADAPT per draft) stays at least GATE: a position more in a run costs about 0.2-0.4
# of a step on this CPU, so a draft that is usually wrong would make decoding slower than without lookup
ADAPT = 0.3
GATE = 0.4


def draft(
    seq: np.ndarray,
    num_tokens: int,
    max_ngram: int,
    max_length: int,
    eos: np.ndarray,
    banning: list[Processor] | None = None,
    vocab: int = 0,
) -> np.ndarray:
    """The tokens that followed the first earlier occurrence of `seq`'s last n-gram, at most `num_tokens` of them.

    `seq` (cur_len,) int64 is the sequence so far, prompt included. As `get_candidates`: n-grams from
    `max_ngram` down to 1, occurrences left to right, the first that has tokens after it wins; a token the
    `banning` processors forbid (score -inf on a row of ones, with the draft before it) ends the draft there, and
    an occurrence left empty by that is skipped; the draft stops before its first EOS. Unlike transformers the
    draft never passes `max_length`: the token after it must fit too. -> (draft_len,) int64, maybe empty.
    """
    length = len(seq)
    room = max_length - length - 1  # the model adds one token after the draft
    if room <= 0:
        return seq[:0]
    for size in range(min(max_ngram, length - 1), 0, -1):
        windows = sliding_window_view(seq, size)  # (length - size + 1, size)
        for start in np.flatnonzero((windows == seq[length - size :]).all(axis=1)) + size:
            chosen = seq[start : min(start + num_tokens, length)]
            if banning and len(chosen):
                chosen = chosen[: _allowed(seq, chosen, banning, vocab)]
                if not len(chosen):
                    continue
            if not len(chosen):
                continue
            if len(eos):
                ends = np.flatnonzero((chosen[:, None] == eos[None, :]).any(axis=1))
                if len(ends):
                    chosen = chosen[: ends[0]]
            return chosen[:room].copy()
    return seq[:0]


def _allowed(seq: np.ndarray, chosen: np.ndarray, banning: list[Processor], vocab: int) -> int:
    """How many leading tokens of `chosen` the processors allow after `seq` (transformers' fake-logits check)."""
    ones = np.ones((1, vocab), np.float32)
    for i, token in enumerate(chosen):
        scores = apply_processors(banning, np.concatenate([seq, chosen[:i]])[None, :], ones)
        if scores[0, token] == -np.inf or scores[0, token] == np.finfo(np.float32).min:
            return i
    return len(chosen)


class Pacing:
    """How much of the next draft to check, from how the request's earlier drafts fared; depends on the tokens
    only, so a request's model calls (and its answer) are the same in `generate()` and the engine.

    The length: as transformers' "heuristic" schedule of assistant models (`AssistedCandidateGenerator.
    update_candidate_strategy`), two more after a draft kept whole, one fewer otherwise, within [1, most]. The gate:
    the moving share of drafts whose first token the model picked, counting drafts that were not checked (the
    model's next token tells whether it would have been kept), so a request that stopped checking starts again
    when its drafts turn right.
    """

    def __init__(self, most: int):
        self.most, self.length, self.hits = most, most, 1.0

    def limit(self) -> int:
        """The most drafted tokens to check now; 0 = take a plain step."""
        return self.length if self.hits >= GATE else 0

    def record(self, first_kept: bool, checked: int = 0, kept: int = 0) -> None:
        """A draft's outcome: whether its first token was the model's; of a checked one, how many were kept."""
        self.hits = (1 - ADAPT) * self.hits + ADAPT * first_kept
        if checked:
            self.length = min(self.most, self.length + 2) if kept == checked else max(1, self.length - 1)


def lookup_calls(request: Request):
    """The coroutine of one prompt-lookup generation (one prompt; greedy or sampling per `request.config`)."""
    config, input_ids = request.config, request.input_ids
    prompt_len, max_length = request.prompt_len, request.max_length
    chain = build_processors(config, prompt_len)
    # only the processors that can forbid a token vet a draft (penalties never do, and top-p over a row of ones
    # would cut it at random)
    banning = build_processors(
        config.replace(
            do_sample=False,
            renormalize_logits=False,
            repetition_penalty=1.0,
            presence_penalty=0.0,
            frequency_penalty=0.0,
        ),
        prompt_len,
    )
    eos = np.asarray(config.eos_token_id, dtype=np.int64)  # (n_eos,)
    num_tokens, ngram = config.prompt_lookup_num_tokens, config.max_matching_ngram_size or DEFAULT_NGRAM

    logits = yield Prefill(input_ids, request.attention_mask)  # (1, vocab)
    positions = np.asarray(logits)[:, None, :]  # (1, 1 + drafted, vocab): the logits after each fed position
    drafted = np.zeros(0, np.int64)  # the tokens fed after the last one, to be checked
    unchecked = drafted  # a draft found but not checked this round (Pacing), to learn whether it was right
    pacing = Pacing(num_tokens)
    ids = np.empty((1, max_length), dtype=np.int64)  # (1, max_length), filled as we go
    ids[:, :prompt_len] = input_ids
    cur_len = prompt_len
    while True:
        steps, finished = [], False
        for i in range(positions.shape[1]):
            raw = positions[:, i]  # (1, vocab)
            scores = apply_processors(chain, ids[:, :cur_len], np.asarray(raw, dtype=np.float32))  # (1, vocab)
            tokens = sample_tokens(scores, rng=request.rng) if config.do_sample else greedy_tokens(scores)  # (1,)
            ids[:, cur_len] = tokens
            cur_len += 1
            logprobs = None if config.logprobs is None else token_logprobs(raw, tokens, config.logprobs)
            steps.append(Step(tokens, np.ones(1, bool), logprobs))
            finished = bool(len(eos)) and bool((tokens[0] == eos).any())
            if finished or cur_len >= max_length or i == len(drafted) or tokens[0] != drafted[i]:
                break
        rejected = len(drafted) - (len(steps) - 1)  # drafts fed after the last kept one
        if len(drafted):
            pacing.record(len(steps) > 1, len(drafted), len(drafted) - rejected)
        elif len(unchecked):
            pacing.record(bool(steps[0].tokens[0] == unchecked[0]))
        if rejected:
            yield Rewind(rejected)  # the cache holds every kept token but the last, as after a plain step
        # subtle: each Step pauses before the next model call, so closing here stops the model
        yield from steps
        if finished or cur_len >= max_length:
            break
        last = ids[:, cur_len - 1]  # (1,)
        found = draft(ids[0, :cur_len], num_tokens, ngram, max_length, eos, banning, raw.shape[-1])
        drafted, unchecked = found[: pacing.limit()], found
        if len(drafted):
            positions = yield Verify(np.concatenate([last, drafted])[None, :])  # (1, 1 + drafted, vocab)
        else:
            positions = (yield Forward(last.copy()))[:, None, :]  # (1, 1, vocab)
    yield Done(GenerateResult(ids[:, :cur_len], None, np.array([cur_len - prompt_len], np.int64)))
