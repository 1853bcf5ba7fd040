"""Multinomial sampling: the draw by hand, reproducibility by seed, and first-token frequencies by chi-square."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from transformers.generation import logits_process as hf

from memgpt_runtime.config import GenerationConfig
from memgpt_runtime.sampling import probabilities, sample_tokens
from memgpt_runtime.search import generate_ids
from torch_state import TorchState, left_pad, tiny_llama

VOCAB = 40
LOGITS = (np.random.default_rng(123).standard_normal(VOCAB) * 2).astype(np.float32)  # (vocab,)


class FixedLogits:
    """A `DecoderState` whose every row sees the same logits at every step."""

    def prefill(self, input_ids, attention_mask):
        self.rows = input_ids.shape[0]
        return np.tile(LOGITS, (self.rows, 1))

    def step(self, tokens):
        return np.tile(LOGITS, (self.rows, 1))

    def select(self, rows):
        self.rows = len(rows)


def test_inverse_cdf_draw_by_hand():
    # seed 0 uniforms: 0.637, 0.270, 0.041, 0.017, 0.813 against the CDF 0.25, 0.5, 1.0
    scores = np.log(np.tile(np.array([0.25, 0.25, 0.5], dtype=np.float32), (5, 1)))
    np.testing.assert_array_equal(sample_tokens(scores, np.random.default_rng(0)), [2, 1, 0, 0, 2])


def test_filtered_tokens_are_never_drawn():
    scores = np.tile(np.array([-np.inf, 0.0, -np.inf, 1.0, -np.inf], dtype=np.float32), (100_000, 1))
    drawn = sample_tokens(scores, np.random.default_rng(5))
    assert set(np.unique(drawn).tolist()) == {1, 3}


def test_probabilities_give_exact_zeros():
    p = probabilities(np.array([[0.0, -np.inf, np.log(3.0)]], dtype=np.float32))
    np.testing.assert_allclose(p, [[0.25, 0.0, 0.75]], rtol=1e-6)
    assert p[0, 1] == 0.0


def llama_sample(seed: int, **options) -> np.ndarray:
    ids, mask = left_pad([[5, 6, 7], [3, 4, 50, 6, 7, 9]])
    config = GenerationConfig(max_new_tokens=10, do_sample=True, seed=seed, **options)
    return generate_ids(TorchState(tiny_llama()), ids, mask, config, rng=np.random.default_rng(config.seed)).sequences


def test_same_seed_same_ids():
    options = dict(temperature=1.3, top_k=30, top_p=0.95)
    np.testing.assert_array_equal(llama_sample(7, **options), llama_sample(7, **options))
    assert not np.array_equal(llama_sample(7, **options), llama_sample(8, **options))


def reference_distribution(temperature: float, top_k: int, top_p: float) -> np.ndarray:
    """(vocab,) the filtered softmax computed with transformers' own warpers, in their order."""
    scores = torch.from_numpy(LOGITS[None, :].copy())
    for warper in [hf.TemperatureLogitsWarper(temperature), hf.TopKLogitsWarper(top_k), hf.TopPLogitsWarper(top_p)]:
        scores = warper(None, scores)
    return torch.softmax(scores.double(), dim=-1)[0].numpy()


@pytest.mark.parametrize(
    "temperature, top_k, top_p",
    [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.0, 8, 1.0), (1.0, 0, 0.8), (0.5, 12, 0.9), (2.0, 20, 0.6)],
)
def test_first_token_frequencies_match_the_filtered_softmax(temperature, top_k, top_p):
    draws = 20_000
    config = GenerationConfig(max_new_tokens=1, do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p)
    prompts = np.ones((draws, 1), dtype=np.int64)  # 20k rows at once: one draw per row
    result = generate_ids(FixedLogits(), prompts, np.ones_like(prompts), config, rng=np.random.default_rng(2024))
    counts = np.bincount(result.sequences[:, 1], minlength=VOCAB)  # (vocab,)
    expected = reference_distribution(temperature, top_k or VOCAB, top_p)
    kept = expected > 0
    assert counts[~kept].sum() == 0, "a token removed by top-k/top-p was drawn"
    if top_k:
        assert kept.sum() <= top_k
    # pool tokens expected fewer than 5 times into one cell so the chi-square approximation holds
    small = expected[kept] * draws < 5
    observed = np.append(counts[kept][~small], counts[kept][small].sum())
    wanted = np.append(expected[kept][~small], expected[kept][small].sum()) * draws
    if not small.any():
        observed, wanted = observed[:-1], wanted[:-1]
    assert chisquare(observed, wanted * observed.sum() / wanted.sum()).pvalue > 1e-3
