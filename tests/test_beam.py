"""Beam search: token-for-token parity with transformers 4.57 `generate(num_beams>1)`, and bookkeeping by hand.

The parity cases run the numpy search over `TorchState` (a torch model behind the `DecoderState` contract);
the scripted fake checks finished hypotheses, length penalty, early stopping and cache selects exactly.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest

from memgpt_runtime import beam as beam_module
from memgpt_runtime.config import GenerationConfig
from memgpt_runtime.request import Done, Request, Step
from memgpt_runtime.search import generate_ids, search
from torch_state import TorchState, hf_generate, left_pad, tiny_gpt2, tiny_llama

PROMPTS = [[5, 6, 7], [3, 4, 50, 6, 7, 9], [11, 12, 13, 14, 15]]
# an EOS each model emits inside some beams of these prompts, so hypotheses finish at different lengths
EOS = {"llama": (92,), "gpt2": (101,)}


@cache
def model(name: str):
    return {"llama": tiny_llama, "gpt2": tiny_gpt2}[name]()


def run_both(name: str, prompts=PROMPTS, **options):
    ids, mask = left_pad(prompts)
    ours = generate_ids(TorchState(model(name)), ids, mask, GenerationConfig(**options))
    theirs = hf_generate(model(name), ids, mask, do_sample=False, **options)
    return ours, theirs


def assert_parity(ours, theirs) -> None:
    np.testing.assert_array_equal(ours.sequences, theirs[0])
    np.testing.assert_allclose(ours.sequences_scores, theirs[1], rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", ["llama", "gpt2"])
@pytest.mark.parametrize("num_beams", [2, 3, 4, 5])
@pytest.mark.parametrize("length_penalty", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("early_stopping", [True, False, "never"])
def test_beam_search_matches_transformers(name, num_beams, length_penalty, early_stopping):
    ours, theirs = run_both(
        name,
        num_beams=num_beams,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
        max_new_tokens=12,
        eos_token_id=EOS[name],
        pad_token_id=0,
    )
    assert_parity(ours, theirs)


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_eos_finishes_hypotheses_at_different_lengths(name):
    ours, theirs = run_both(
        name, num_beams=4, num_return_sequences=4, max_new_tokens=12, eos_token_id=EOS[name], pad_token_id=1
    )
    assert_parity(ours, theirs)
    generated = ours.sequences[:, len(PROMPTS[1]) :]
    ends_with_eos_then_pad = [
        row for row in generated if EOS[name][0] in row.tolist() and row.tolist().index(EOS[name][0]) < len(row) - 1
    ]
    assert ends_with_eos_then_pad, "the chosen EOS must end some hypotheses early (padded after it)"
    for row in ends_with_eos_then_pad:
        assert set(row[row.tolist().index(EOS[name][0]) + 1 :].tolist()) == {1}


@pytest.mark.parametrize("num_return_sequences", [1, 2, 3, 4])
@pytest.mark.parametrize("early_stopping", [True, False])
def test_num_return_sequences(num_return_sequences, early_stopping):
    ours, theirs = run_both(
        "llama",
        num_beams=4,
        num_return_sequences=num_return_sequences,
        early_stopping=early_stopping,
        max_new_tokens=10,
        eos_token_id=EOS["llama"],
        pad_token_id=0,
    )
    assert ours.sequences.shape[0] == len(PROMPTS) * num_return_sequences
    assert_parity(ours, theirs)


@pytest.mark.parametrize(
    "options",
    [
        dict(no_repeat_ngram_size=2),
        dict(no_repeat_ngram_size=3),
        dict(repetition_penalty=1.5),
        dict(repetition_penalty=0.7),
        dict(min_new_tokens=6),
        dict(min_length=12),
        dict(min_new_tokens=4, min_length=14),  # min_new_tokens takes precedence, as in transformers
        dict(eos_token_id=(92, 5, 108)),  # several EOS ids: 4 * num_beams candidates kept per step
        dict(pad_token_id=7),
        dict(pad_token_id=0, num_return_sequences=3),  # pad 0 pads with the first EOS (transformers' `or`)
        dict(length_penalty=-1.0, early_stopping="never"),
        dict(length_penalty=0.0, early_stopping="never"),
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_beam_options_match_transformers(name, options):
    options = {"num_beams": 3, "max_new_tokens": 12, "eos_token_id": EOS[name], "pad_token_id": 1, **options}
    assert_parity(*run_both(name, **options))


def test_max_length_without_eos():
    ours, theirs = run_both("llama", num_beams=3, max_length=14, num_return_sequences=2)
    assert ours.sequences.shape == (6, 14)
    assert_parity(ours, theirs)


def test_single_prompt_without_padding():
    assert_parity(*run_both("gpt2", prompts=[[9, 8, 7, 6]], num_beams=5, max_new_tokens=15, eos_token_id=EOS["gpt2"]))


# ---- scripted fake: next-token probabilities depend on the last token only, so every score is worked by hand


EOS_ID, A, B, C, PAD = 0, 1, 2, 3, 4
NEXT = {  # P(next | last) over [eos, a, b, c, pad]
    A: [0.5, 0.3, 0.15, 0.05, 0.0],
    B: [0.1, 0.1, 0.1, 0.7, 0.0],
    C: [0.6, 0.2, 0.1, 0.1, 0.0],
}


class MarkovFake:
    """A `DecoderState` whose logits are log P(next | last token); it keeps each row's history to check selects."""

    def __init__(self, table: dict[int, list[float]] = NEXT) -> None:
        self.table = table
        self.rows: list[list[int]] = []
        self.selects: list[list[int]] = []

    def _logits(self) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(np.array([self.table[row[-1]] for row in self.rows], dtype=np.float32))  # (rows, 5)

    def prefill(self, input_ids, attention_mask):
        self.rows = [list(r) for r in input_ids]
        return self._logits()

    def step(self, tokens):
        for row, token in zip(self.rows, tokens.tolist()):
            row.append(token)
        return self._logits()

    def select(self, rows):
        self.selects.append(rows.tolist())
        self.rows = [list(self.rows[i]) for i in rows]


L = {k: {t: math.log(p) for t, p in enumerate(v) if p} for k, v in NEXT.items()}


@pytest.mark.parametrize(
    "early_stopping, expected_ids, expected_scores, expected_selects",
    [
        # step 1 from "a": a+eos (-0.693) finishes; a+a, a+b run. Step 2: a+a+eos (-1.897 / 2) finishes: both
        # slots full -> True stops; False stops too: best running a+b+c (-2.254) / 2 < worst finished -0.949.
        (True, [[A, EOS_ID, PAD], [A, A, EOS_ID]], [L[A][EOS_ID], (L[A][A] + L[A][EOS_ID]) / 2], [[0, 0], [0, 0]]),
        (False, [[A, EOS_ID, PAD], [A, A, EOS_ID]], [L[A][EOS_ID], (L[A][A] + L[A][EOS_ID]) / 2], [[0, 0], [0, 0]]),
        # "never" measures the running beam at max length: -2.254 / 3 > -0.949, so step 3 runs; at max length
        # a+b+c+eos (-2.765 / 3 = -0.922) displaces a+a+eos (-0.949)
        (
            "never",
            [[A, EOS_ID, PAD, PAD], [A, B, C, EOS_ID]],
            [L[A][EOS_ID], (L[A][B] + L[B][C] + L[C][EOS_ID]) / 3],
            [[0, 0], [0, 0], [1, 0]],
        ),
    ],
)
def test_beam_bookkeeping_by_hand(early_stopping, expected_ids, expected_scores, expected_selects):
    fake = MarkovFake()
    config = GenerationConfig(
        num_beams=2,
        num_return_sequences=2,
        max_new_tokens=3,
        eos_token_id=EOS_ID,
        pad_token_id=PAD,
        early_stopping=early_stopping,
    )
    result = generate_ids(fake, np.array([[A]]), np.array([[1]]), config)
    np.testing.assert_array_equal(result.sequences, expected_ids)
    np.testing.assert_allclose(result.sequences_scores, expected_scores, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(result.lengths, [row.index(EOS_ID) for row in expected_ids])  # EOS counted, pad not
    assert fake.selects == expected_selects  # expand, then reorder; identity reorders are skipped


def test_cache_follows_the_beams_and_identity_reorders_are_skipped():
    # from "a": a+a (.6) and a+b (.3) both extend beam 0 -> select [0, 0]; then a+a+a (.36) and a+b+b (.27) each
    # extend their own beam -> identity, skipped; then a+b+b+b (.243) overtakes a+a+a+a (.216) -> select [1, 0]
    table = {A: [0.01, 0.6, 0.3, 0.09, 0.0], B: [0.01, 0.04, 0.9, 0.05, 0.0]}
    fake = MarkovFake(table)
    config = GenerationConfig(
        num_beams=2, num_return_sequences=2, max_new_tokens=4, eos_token_id=EOS_ID, pad_token_id=PAD
    )
    result = generate_ids(fake, np.array([[A]]), np.array([[1]]), config)
    assert fake.selects == [[0, 0], [0, 0], [1, 0]]  # no select after the last step either
    # at max length a+b+b+b+b (.2187) and a+a+a+a+a (.1296) finish
    np.testing.assert_array_equal(result.sequences, [[A, B, B, B, B], [A, A, A, A, A]])
    np.testing.assert_allclose(result.sequences_scores, np.log([0.3 * 0.9**3, 0.6**4]) / 4, rtol=0, atol=1e-6)


def test_pad_id_0_pads_with_the_first_eos():
    # transformers fills with `pad_token_id or eos_token_id[0]`, so an explicit pad id of 0 pads with EOS
    ours, theirs = run_both(
        "llama", num_beams=4, num_return_sequences=4, max_new_tokens=12, eos_token_id=EOS["llama"], pad_token_id=0
    )
    assert_parity(ours, theirs)
    short = [row for row in ours.sequences[:, 6:].tolist() if 92 in row[:-1]]
    assert short, "some hypothesis must end early"
    for row in short:
        assert set(row[row.index(92) :]) == {92}


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [1, 4, 8, 10])
def test_topk_of_long_rows_is_exact_with_ties_to_the_lower_index(seed, k):
    """The beams x vocab scores take a sampled top-k; it must equal a full stable sort, ties and -inf included."""
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((2, 4 * 12288)).astype(np.float32)
    if seed % 2:
        scores = np.round(scores * 2) / 2  # many ties
    if seed % 3 == 0:
        scores[:, rng.random(scores.shape[1]) < 0.95] = -np.inf  # banned tokens
    values, indices = beam_module._topk(scores, k)
    expected = np.argsort(-scores, axis=-1, kind="stable")[:, :k]
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_array_equal(values, np.take_along_axis(scores, expected, axis=-1))


@pytest.mark.parametrize("seed", range(40))
def test_cache_copy_plan_gives_the_rows_a_gather_gives(seed):
    """Beam reorders copy rows in place; the plan must reproduce `rows[new] = rows[old]`, cycles included."""
    from memgpt_runtime.slots import copy_plan

    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 9))
    rows = rng.integers(0, n, n) if seed % 2 else rng.permutation(n)  # duplicates (beams) or pure swaps
    data = rng.standard_normal((n, 3))
    expected = data[rows]
    steps, snapshot_rows = copy_plan(list(range(n)), rows.tolist())
    snapshots = {r: data[r].copy() for r in snapshot_rows}
    for target, source, from_snapshot in steps:
        data[target] = snapshots[source] if from_snapshot else data[source]
    np.testing.assert_array_equal(data, expected)
    assert len(snapshot_rows) <= n // 2  # at most one per cycle of two or more rows


class CountingMarkov(MarkovFake):
    def __init__(self) -> None:
        super().__init__()
        self.steps = 0

    def step(self, tokens):
        self.steps += 1
        return super().step(tokens)


def beam_steps(max_new_tokens: int = 3):
    fake = CountingMarkov()
    config = GenerationConfig(num_beams=2, max_new_tokens=max_new_tokens, early_stopping="never", eos_token_id=EOS_ID)
    return fake, search(fake, Request.resolve(np.array([[A]]), np.array([[1]]), config))


def test_beam_search_yields_an_empty_step_per_model_call_then_its_result():
    fake, steps = beam_steps()
    events = list(steps)
    assert [type(e) for e in events] == [Step, Step, Step, Done]  # "never" runs to max length: prefill + 2 steps
    assert all(e.tokens is None and e.live is None for e in events[:-1])
    assert fake.steps == 2
    assert events[-1].result.sequences_scores.shape == (1,)


def test_closing_beam_search_stops_the_model():
    fake, steps = beam_steps()
    next(steps)
    steps.close()
    assert fake.steps == 0
