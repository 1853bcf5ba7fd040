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
# pacing (docs/lookup.md): a check of n positions costs about 1 + CHECK_COST + ROW_COST * (n - free) plain steps
# on this CPU (tools/verify_cost.py), where `free` is the positions a plain step runs anyway (the session's
# min_rows: a lone int4 row runs beside a scratch row); the share of drafted tokens the model confirms is a moving
# count, each draft's weight DECAY of the next one's, starting from PRIOR (kept, missed)
ROW_COST = 0.35
CHECK_COST = 0.05
DECAY = 0.7
PRIOR = (1.0, 1.0)


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
    """How many drafted tokens to check now, from how the request's earlier drafts fared; depends on the tokens
    only, so a request's model calls (and its answer) are the same in `generate()` and the engine.

    The drafted tokens are taken as kept one after another with a chance p (the moving share of drafted tokens
    the model confirmed, counting the first token of drafts found but not checked: the model's next token says
    whether it would have been kept); a check of d drafted tokens then yields (1 - p^(d+1)) / (1 - p) tokens on
    average for 1 + CHECK_COST + ROW_COST * (d + 1 - free) steps, and the pacing checks the d up to `most` with
    the most tokens per step, or none (a plain step) when no d beats one token per step.
    transformers paces assistant models by a schedule instead (`AssistedCandidateGenerator.
    update_candidate_strategy`: two more after a draft kept whole, one fewer otherwise), for a GPU on which a
    check costs about one step whatever its length.
    """

    def __init__(self, most: int, free: int = 1):
        self.most, self.free = most, max(1, free)
        self.kept, self.missed = PRIOR

    def chance(self) -> float:
        """The moving share of drafted tokens the model confirmed."""
        return self.kept / (self.kept + self.missed)

    def limit(self) -> int:
        """The most drafted tokens to check now; 0 = take a plain step."""
        p = self.chance()
        best, best_rate, expected, reach = 0, 1.0, 1.0, 1.0
        for d in range(1, self.most + 1):
            reach *= p
            expected += reach  # tokens a check of d yields on average: 1 + p + ... + p^d
            rate = expected / (1 + CHECK_COST + ROW_COST * max(0, d + 1 - self.free))
            if rate > best_rate:
                best, best_rate = d, rate
        return best

    def record(self, kept: int, missed: bool) -> None:
        """A draft's outcome: how many of its tokens the model confirmed, and whether it then rejected one (a
        draft that was not checked counts its first token only)."""
        self.kept = DECAY * self.kept + kept
        self.missed = DECAY * self.missed + missed


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
    pacing = Pacing(num_tokens, request.free_positions)
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
            pacing.record(len(drafted) - rejected, rejected > 0)
        elif len(unchecked):
            right = bool(steps[0].tokens[0] == unchecked[0])
            pacing.record(int(right), not right)
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
