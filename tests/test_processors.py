"""Logits processors against transformers 4.57's own processor classes on random scores, and their chain order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.generation import logits_process as hf

from memgpt_runtime import processors as P
from memgpt_runtime.config import GenerationConfig

ROWS, VOCAB, LENGTH = 6, 50, 12


def random_case(seed: int, id_vocab: int = VOCAB) -> tuple[np.ndarray, np.ndarray]:
    """(rows, length) ids from a small alphabet (so n-grams repeat) and (rows, vocab) float32 scores."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, id_vocab, size=(ROWS, LENGTH), dtype=np.int64)
    scores = (rng.standard_normal((ROWS, VOCAB)) * 3).astype(np.float32)
    return ids, scores


def theirs(processor, ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
    return processor(torch.from_numpy(ids), torch.from_numpy(scores.copy())).numpy()


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("penalty", [0.6, 1.2, 2.0])
def test_repetition_penalty(seed, penalty):
    ids, scores = random_case(seed)
    expected = theirs(hf.RepetitionPenaltyLogitsProcessor(penalty), ids, scores)
    np.testing.assert_array_equal(P.repetition_penalty(ids, scores, penalty), expected)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_no_repeat_ngram(seed, size):
    ids, scores = random_case(seed, id_vocab=3)  # 3-letter alphabet: many repeated n-grams
    expected = theirs(hf.NoRepeatNGramLogitsProcessor(size), ids, scores)
    np.testing.assert_array_equal(P.no_repeat_ngram(ids, scores, size), expected)


def test_no_repeat_ngram_by_hand():
    ids = np.array([[7, 8, 9, 7, 8]])  # the next token would complete (7, 8, ?): 9 is banned
    out = P.no_repeat_ngram(ids, np.zeros((1, 10), dtype=np.float32), 3)
    assert np.isinf(out[0]).nonzero()[0].tolist() == [9]


def test_no_repeat_ngram_is_off_until_a_full_ngram_exists():
    scores = np.zeros((1, 5), dtype=np.float32)
    assert P.no_repeat_ngram(np.array([[1, 1]]), scores, 3) is scores


@pytest.mark.parametrize("length, banned", [(LENGTH + 1, True), (LENGTH, False)])
def test_min_length(length, banned):
    ids, scores = random_case(0)
    expected = theirs(hf.MinLengthLogitsProcessor(length, [3, 7]), ids, scores)
    ours = P.min_length(ids, scores, length, (3, 7))
    np.testing.assert_array_equal(ours, expected)
    assert np.isneginf(ours[:, [3, 7]]).all() == banned


@pytest.mark.parametrize("prompt_length, count", [(10, 2), (10, 3), (4, 9), (4, 8)])
def test_min_new_tokens_is_min_length_at_prompt_plus_count(prompt_length, count):
    ids, scores = random_case(1)
    expected = theirs(hf.MinNewTokensLengthLogitsProcessor(prompt_length, count, [0]), ids, scores)
    np.testing.assert_array_equal(P.min_length(ids, scores, prompt_length + count, (0,)), expected)


@pytest.mark.parametrize("value", [0.3, 0.7, 1.5])
def test_temperature(value):
    ids, scores = random_case(2)
    expected = theirs(hf.TemperatureLogitsWarper(value), ids, scores)
    np.testing.assert_allclose(P.temperature(ids, scores, value), expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("k, keep", [(1, 1), (5, 1), (1, 3), (VOCAB, 1), (VOCAB + 10, 1)])
def test_top_k(seed, k, keep):
    ids, scores = random_case(seed)
    expected = theirs(hf.TopKLogitsWarper(k, min_tokens_to_keep=keep), ids, scores)
    np.testing.assert_array_equal(P.top_k(ids, scores, k, keep), expected)


def test_top_k_keeps_ties():
    scores = np.array([[1.0, 3.0, 3.0, 0.0]], dtype=np.float32)
    np.testing.assert_array_equal(P.top_k(None, scores, 1), [[-np.inf, 3.0, 3.0, -np.inf]])


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("p, keep", [(0.05, 1), (0.3, 1), (0.8, 1), (0.95, 1), (0.3, 4), (1e-9, 1)])
def test_top_p(seed, p, keep):
    ids, scores = random_case(seed)
    expected = theirs(hf.TopPLogitsWarper(p, min_tokens_to_keep=keep), ids, scores)
    np.testing.assert_array_equal(P.top_p(ids, scores, p, keep), expected)


def test_top_p_by_hand():
    # probabilities 0.5, 0.3, 0.15, 0.05: p=0.8 keeps the first two (their mass reaches 0.8)
    scores = np.log(np.array([[0.15, 0.5, 0.05, 0.3]], dtype=np.float32))
    kept = np.isfinite(P.top_p(None, scores, 0.75))
    np.testing.assert_array_equal(kept, [[False, True, False, True]])


def test_log_softmax_matches_torch():
    _, scores = random_case(4)
    expected = torch.log_softmax(torch.from_numpy(scores), dim=-1).numpy()
    np.testing.assert_allclose(P.log_softmax(scores), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("words", [[[4]], [[1, 2]], [[0, 1, 2], [3], [2, 2]], [[5, 6, 7, 8]]])
def test_bad_words(seed, words):
    ids, scores = random_case(seed, id_vocab=3)  # small alphabet: multi-token words often match
    expected = theirs(hf.NoBadWordsLogitsProcessor(words, eos_token_id=None), ids, scores)
    np.testing.assert_array_equal(P.bad_words(ids, scores, tuple(map(tuple, words))), expected)


def test_bad_words_by_hand():
    ids = np.array([[1, 2, 3], [3, 2, 1]])
    out = P.bad_words(ids, np.zeros((2, 6), dtype=np.float32), ((2, 3, 4), (5,)))
    assert [np.isinf(row).nonzero()[0].tolist() for row in out] == [[4, 5], [5]]  # only row 0 ends with (2, 3)
    out = P.bad_words(ids, np.zeros((2, 6), dtype=np.float32), ((3, 4),))
    assert [np.isinf(row).nonzero()[0].tolist() for row in out] == [[4], []]


def test_bad_words_drop_a_lone_eos_as_transformers_does():
    chain = P.build_processors(GenerationConfig(bad_words_ids=[[2], [7]], eos_token_id=2), 1)
    scores = P.apply_processors(chain, np.array([[5]]), np.zeros((1, 10), np.float32))
    assert np.isinf(scores[0]).nonzero()[0].tolist() == [7]


@pytest.mark.parametrize("length", [1, 2])
def test_forced_bos(length):
    ids, scores = random_case(0)
    ids = ids[:, :length]
    expected = theirs(hf.ForcedBOSTokenLogitsProcessor(7), ids, scores)
    np.testing.assert_array_equal(P.forced_token(ids, scores, 1, (7,)), expected)


@pytest.mark.parametrize("max_length", [LENGTH + 1, LENGTH + 2])
@pytest.mark.parametrize("eos", [3, [3, 9]])
def test_forced_eos(max_length, eos):
    ids, scores = random_case(1)
    expected = theirs(hf.ForcedEOSTokenLogitsProcessor(max_length, eos), ids, scores)
    ours = P.forced_token(ids, scores, max_length - 1, (eos,) if isinstance(eos, int) else tuple(eos))
    np.testing.assert_array_equal(ours, expected)


def test_renormalize():
    ids, scores = random_case(2)
    scores[:, :5] = -np.inf  # after a ban, as it usually runs
    expected = theirs(hf.LogitNormalization(), ids, scores)
    np.testing.assert_allclose(P.renormalize(ids, scores), expected, rtol=1e-6, atol=1e-6)


def processor_names(config: GenerationConfig, prompt_length: int = 4) -> list[str]:
    return [getattr(p, "func", p).__name__ for p in P.build_processors(config, prompt_length)]


@pytest.mark.parametrize(
    "options, expected",
    [
        (dict(), []),
        (dict(do_sample=True), ["top_k"]),
        (dict(do_sample=True, top_k=0), []),
        (
            dict(
                do_sample=True,
                temperature=0.5,
                top_p=0.9,
                repetition_penalty=1.1,
                no_repeat_ngram_size=2,
                min_new_tokens=3,
                eos_token_id=2,
            ),
            ["repetition_penalty", "no_repeat_ngram", "min_length", "temperature", "top_k", "top_p"],
        ),
        (dict(num_beams=3, temperature=0.5, top_p=0.9, top_k=5), []),  # warpers only when sampling
        (dict(min_length=5), []),  # no EOS, nothing to ban
        (dict(min_length=5, eos_token_id=2), ["min_length"]),
        (
            dict(
                no_repeat_ngram_size=3,
                bad_words_ids=[[4]],
                min_length=3,
                eos_token_id=2,
                forced_bos_token_id=0,
                forced_eos_token_id=2,
            ),
            ["no_repeat_ngram", "bad_words", "min_length", "forced_token", "forced_token"],
        ),
        (dict(do_sample=True, top_k=5, renormalize_logits=True), ["top_k", "renormalize"]),
    ],
)
def test_chain_follows_get_logits_processor_order(options, expected):
    assert processor_names(GenerationConfig(**options)) == expected


@pytest.mark.parametrize(
    "options, prompt_length, expected",
    [(dict(min_length=9), 4, 9), (dict(min_new_tokens=2), 4, 6), (dict(min_new_tokens=2, min_length=20), 4, 6)],
)
def test_min_new_tokens_replaces_min_length(options, prompt_length, expected):
    assert GenerationConfig(**options).min_total_length(prompt_length) == expected


# ---- OpenAI's presence and frequency penalties, as vLLM applies them (generated tokens only)


def vllm_penalties(ids, scores, prompt_length, presence, frequency):
    """vLLM `apply_penalties` by its definition: counts of each token in the output, the prompt left out."""
    out = scores.astype(np.float64).copy()
    for r in range(ids.shape[0]):
        counts = np.bincount(ids[r, prompt_length:], minlength=scores.shape[1])
        out[r] -= frequency * counts + presence * (counts > 0)
    return out


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("presence, frequency", [(0.5, 0.0), (0.0, 1.3), (-2.0, 2.0), (1.0, -0.7)])
@pytest.mark.parametrize("prompt_length", [0, 5, LENGTH])
def test_presence_frequency_penalty(seed, presence, frequency, prompt_length):
    ids, scores = random_case(seed, id_vocab=6)  # few distinct ids: repeated tokens
    ours = P.presence_frequency_penalty(ids, scores, prompt_length, presence, frequency)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(
        ours, vllm_penalties(ids, scores, prompt_length, presence, frequency), rtol=1e-6, atol=1e-5
    )


def test_presence_frequency_penalty_by_hand():
    ids = np.array([[9, 9, 2, 2, 2, 4]])  # prompt [9, 9]; generated 2 three times, 4 once
    out = P.presence_frequency_penalty(ids, np.zeros((1, 10), np.float32), 2, presence=0.5, frequency=0.25)
    expected = np.zeros(10, np.float32)
    expected[2], expected[4] = -0.5 - 0.75, -0.5 - 0.25
    np.testing.assert_array_equal(out[0], expected)


def test_penalties_come_right_after_the_repetition_penalty():
    config = GenerationConfig(
        do_sample=True, temperature=0.5, repetition_penalty=1.2, presence_penalty=0.3, frequency_penalty=0.1
    )
    assert processor_names(config) == ["repetition_penalty", "presence_frequency_penalty", "temperature", "top_k"]
    assert processor_names(GenerationConfig(presence_penalty=0.0, frequency_penalty=0.0)) == []


@pytest.mark.parametrize("field", ["presence_penalty", "frequency_penalty"])
@pytest.mark.parametrize("value", [2.5, -2.01, float("nan"), float("inf"), True])
def test_penalties_are_checked(field, value):
    from memgpt_runtime.errors import UsageError

    with pytest.raises(UsageError, match=field):
        GenerationConfig(**{field: value})
