"""Greedy search and the `generate_ids` entry point: parity with transformers 4.57 `generate()` and its contract."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from memgpt_runtime.config import GenerationConfig
from memgpt_runtime.errors import UsageError
from memgpt_runtime.search import GenerateResult, generate_ids
from torch_state import TorchState, hf_generate, left_pad, tiny_gpt2, tiny_llama

PROMPTS = [[5, 6, 7], [3, 4, 50, 6, 7, 9], [11, 12, 13, 14, 15]]
# tokens the greedy continuations emit (llama: row 2 at step 5, row 1 at step 5; gpt2: rows 0 and 2)
EOS = {"llama": (92, 5), "gpt2": (101, 98)}


@lru_cache(maxsize=None)
def model(name: str):
    return {"llama": tiny_llama, "gpt2": tiny_gpt2}[name]()


def run_both(name: str, prompts=PROMPTS, **options):
    ids, mask = left_pad(prompts)
    ours = generate_ids(TorchState(model(name)), ids, mask, GenerationConfig(**options))
    theirs, _ = hf_generate(model(name), ids, mask, do_sample=False, **options)
    return ours, theirs


@pytest.mark.parametrize("name", ["llama", "gpt2"])
@pytest.mark.parametrize(
    "options",
    [
        dict(),
        dict(eos_token_id="model"),
        dict(eos_token_id="model", pad_token_id=3),
        dict(no_repeat_ngram_size=1),
        dict(no_repeat_ngram_size=2),
        dict(repetition_penalty=1.3),
        dict(repetition_penalty=0.5),
        dict(eos_token_id="model", min_new_tokens=8),
        dict(eos_token_id="model", min_length=13),
        dict(no_repeat_ngram_size=3, repetition_penalty=1.2, eos_token_id="model", min_new_tokens=3),
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "plain",
)
def test_greedy_matches_transformers(name, options):
    if options.get("eos_token_id") == "model":
        options = {**options, "eos_token_id": EOS[name]}
    ours, theirs = run_both(name, max_new_tokens=12, **options)
    assert ours.sequences_scores is None
    np.testing.assert_array_equal(ours.sequences, theirs)


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_greedy_pads_finished_rows_and_stops_when_all_finish(name):
    ours, theirs = run_both(name, max_new_tokens=30, eos_token_id=EOS[name], pad_token_id=3)
    np.testing.assert_array_equal(ours.sequences, theirs)
    generated = ours.sequences[:, 6:]
    finished = [row for row in generated.tolist() if set(row) & set(EOS[name])]
    assert finished, "some row must emit EOS"
    for row in finished:
        end = min(row.index(e) for e in EOS[name] if e in row)
        assert set(row[end + 1 :]) <= {3}


def test_max_length_counts_the_prompt():
    ours, theirs = run_both("llama", max_length=9)
    assert ours.sequences.shape == (3, 9)
    np.testing.assert_array_equal(ours.sequences, theirs)


def test_on_tokens_streams_each_step():
    ids, mask = left_pad(PROMPTS)
    steps: list[np.ndarray] = []
    config = GenerationConfig(max_new_tokens=7, eos_token_id=EOS["llama"], pad_token_id=3)
    result = generate_ids(TorchState(model("llama")), ids, mask, config, on_tokens=steps.append)
    assert [s.shape for s in steps] == [(3,)] * (result.sequences.shape[1] - 6)
    np.testing.assert_array_equal(np.stack(steps, axis=1), result.sequences[:, 6:])


def test_sampling_with_top_k_1_is_greedy():
    ids, mask = left_pad(PROMPTS)
    greedy = generate_ids(TorchState(model("llama")), ids, mask, GenerationConfig(max_new_tokens=10))
    sampled = generate_ids(
        TorchState(model("llama")), ids, mask,
        GenerationConfig(max_new_tokens=10, do_sample=True, top_k=1, temperature=0.7), rng=np.random.default_rng(0),
    )
    np.testing.assert_array_equal(sampled.sequences, greedy.sequences)


def test_sampling_returns_adjacent_copies_per_prompt():
    ids, mask = left_pad(PROMPTS)
    config = GenerationConfig(max_new_tokens=6, do_sample=True, num_return_sequences=4, seed=1)
    result = generate_ids(TorchState(model("llama")), ids, mask, config, rng=np.random.default_rng(config.seed))
    assert result.sequences.shape == (12, 12)
    np.testing.assert_array_equal(result.sequences[:, :6], np.repeat(ids, 4, axis=0))


def test_result_is_a_small_dataclass():
    assert GenerateResult(np.zeros((1, 2), dtype=np.int64)).sequences_scores is None


@pytest.mark.parametrize(
    "config, rng, match",
    [
        (GenerationConfig(max_length=6), None, "max_length"),
        (GenerationConfig(max_new_tokens=3, do_sample=True), None, "rng"),
    ],
)
def test_refuses_impossible_requests(config, rng, match):
    ids, mask = left_pad(PROMPTS)
    with pytest.raises(UsageError, match=match):
        generate_ids(TorchState(model("llama")), ids, mask, config, rng=rng)


def test_refuses_mismatched_mask():
    with pytest.raises(UsageError, match="input_ids"):
        generate_ids(TorchState(model("llama")), np.ones((2, 3)), np.ones((2, 4)), GenerationConfig(max_new_tokens=2))
