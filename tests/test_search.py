"""Greedy search, its steps and the `generate_ids` entry point: parity with transformers 4.57 `generate()`, the
step events (tokens, lengths, closing) over a scripted fake, and the contract."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from memgpt_runtime.config import GenerationConfig
from memgpt_runtime.errors import UsageError
from memgpt_runtime.request import Done, Request, Step
from memgpt_runtime.search import finish, generate_ids, search
from torch_state import TorchState, hf_generate, left_pad, tiny_gpt2, tiny_llama

PROMPTS = [[5, 6, 7], [3, 4, 50, 6, 7, 9], [11, 12, 13, 14, 15]]
# tokens the greedy continuations emit (llama: row 2 at step 5, row 1 at step 5; gpt2: rows 0 and 2)
EOS = {"llama": (92, 5), "gpt2": (101, 98)}


@cache
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


def test_steps_yield_the_new_tokens_of_the_result():
    ids, mask = left_pad(PROMPTS)
    config = GenerationConfig(max_new_tokens=7, eos_token_id=EOS["llama"], pad_token_id=3)
    events = list(search(TorchState(model("llama")), Request.resolve(ids, mask, config)))
    steps, done = events[:-1], events[-1]
    assert all(isinstance(e, Step) for e in steps) and isinstance(done, Done)
    new = done.result.sequences[:, 6:]
    assert [s.tokens.shape for s in steps] == [(3,)] * new.shape[1]
    np.testing.assert_array_equal(np.stack([s.tokens for s in steps], axis=1), new)
    np.testing.assert_array_equal(np.stack([s.live for s in steps], axis=1).sum(axis=1), done.result.lengths)
    assert set(new[np.arange(new.shape[1]) >= done.result.lengths[:, None]].tolist()) <= {3}, (
        "after its length a row is padding"
    )


# ---- scripted fake: each row emits the tokens of its script, so the steps, lengths and model calls are exact

EOS_ID, PAD = 1, 7


class Scripted:
    """A `DecoderState` whose row r's logits after t new tokens make `script[r][t]` the greedy pick; logs its calls."""

    def __init__(self, script: list[list[int]], vocab: int = 8) -> None:
        self.script = np.array(script)  # (rows, steps)
        self.vocab = vocab
        self.calls: list[str] = []

    def _logits(self) -> np.ndarray:
        t = len(self.calls) - 1  # new tokens so far
        logits = np.zeros((len(self.script), self.vocab), dtype=np.float32)  # (rows, vocab)
        logits[np.arange(len(self.script)), self.script[:, t]] = 1.0
        return logits

    def prefill(self, input_ids, attention_mask):
        self.calls.append("prefill")
        return self._logits()

    def step(self, tokens):
        self.calls.append("step")
        return self._logits()

    def select(self, rows):
        raise AssertionError("greedy search never selects rows")


SCRIPT = [[4, EOS_ID, 5, 5, 5], [4, 4, 4, EOS_ID, 5], [4, 4, 4, 4, 4]]


def scripted_run(script=SCRIPT, max_new_tokens=5):
    state = Scripted(script)
    prompts = np.full((len(script), 2), 6, dtype=np.int64)
    config = GenerationConfig(max_new_tokens=max_new_tokens, eos_token_id=EOS_ID, pad_token_id=PAD)
    return state, search(state, Request.resolve(prompts, np.ones_like(prompts), config))


def test_lengths_count_the_eos_and_not_the_padding():
    state, steps = scripted_run()
    events = list(steps)
    result = events[-1].result
    np.testing.assert_array_equal(
        result.sequences[:, 2:], [[4, EOS_ID, PAD, PAD, PAD], [4, 4, 4, EOS_ID, PAD], [4] * 5]
    )
    np.testing.assert_array_equal(result.lengths, [2, 4, 5])
    np.testing.assert_array_equal(
        [e.live.tolist() for e in events[:-1]],
        [[True, True, True], [True, True, True], [False, True, True], [False, True, True], [False, False, True]],
    )
    assert state.calls == ["prefill"] + ["step"] * 4  # no call after the last token


def test_search_stops_when_every_row_has_finished():
    state, steps = scripted_run([[EOS_ID, 5, 5], [4, EOS_ID, 5]])
    result = finish(steps)
    np.testing.assert_array_equal(result.sequences[:, 2:], [[EOS_ID, PAD], [4, EOS_ID]])
    np.testing.assert_array_equal(result.lengths, [1, 2])
    assert state.calls == ["prefill", "step"]


@pytest.mark.parametrize("taken", [1, 2, 4])
def test_closing_the_steps_stops_the_model(taken):
    state, steps = scripted_run()
    for _ in range(taken):
        assert isinstance(next(steps), Step)
    steps.close()
    assert state.calls == ["prefill"] + ["step"] * (taken - 1)  # each step pauses before the next model call
    with pytest.raises(StopIteration):
        next(steps)
    assert state.calls == ["prefill"] + ["step"] * (taken - 1)


def test_sampling_with_top_k_1_is_greedy():
    ids, mask = left_pad(PROMPTS)
    greedy = generate_ids(TorchState(model("llama")), ids, mask, GenerationConfig(max_new_tokens=10))
    sampled = generate_ids(
        TorchState(model("llama")),
        ids,
        mask,
        GenerationConfig(max_new_tokens=10, do_sample=True, top_k=1, temperature=0.7),
        rng=np.random.default_rng(0),
    )
    np.testing.assert_array_equal(sampled.sequences, greedy.sequences)


def test_sampling_returns_adjacent_copies_per_prompt():
    ids, mask = left_pad(PROMPTS)
    config = GenerationConfig(max_new_tokens=6, do_sample=True, num_return_sequences=4, seed=1)
    result = generate_ids(TorchState(model("llama")), ids, mask, config, rng=np.random.default_rng(config.seed))
    assert result.sequences.shape == (12, 12)
    np.testing.assert_array_equal(result.sequences[:, :6], np.repeat(ids, 4, axis=0))


def test_a_greedy_result_counts_each_rows_new_tokens_up_to_its_eos():
    ids, mask = left_pad(PROMPTS)
    config = GenerationConfig(max_new_tokens=8, eos_token_id=EOS["llama"], pad_token_id=3)
    result = generate_ids(TorchState(model("llama")), ids, mask, config)
    new = result.sequences[:, ids.shape[1] :].tolist()
    expected = [next((i + 1 for i, t in enumerate(row) if t in EOS["llama"]), 8) for row in new]
    assert min(expected) < 8  # some row stopped early, so the count is not just max_new_tokens
    assert result.lengths.tolist() == expected and result.sequences_scores is None


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


# ---- per-step logprobs: the model's raw distribution (vLLM's default), only when asked


def test_steps_carry_logprobs_of_the_raw_logits_when_asked():
    from memgpt_runtime.processors import log_softmax

    ids, mask = left_pad(PROMPTS)
    state = TorchState(model("llama"))
    # a repetition penalty changes the pick's scores, never the reported logprobs
    config = GenerationConfig(
        max_new_tokens=6, logprobs=3, repetition_penalty=1.5, eos_token_id=EOS["llama"], pad_token_id=3
    )
    events = list(search(state, Request.resolve(ids, mask, config)))
    plain = list(search(TorchState(model("llama")), Request.resolve(ids, mask, config.replace(logprobs=None))))
    np.testing.assert_array_equal(events[-1].result.sequences, plain[-1].result.sequences)
    assert all(s.logprobs is None for s in plain[:-1])
    sequences = events[-1].result.sequences
    reference = TorchState(model("llama"))  # the same model calls again, to read each step's logits
    logits = reference.prefill(ids, mask)
    for t, step in enumerate(events[:-1]):
        lp = log_softmax(np.asarray(logits, np.float32))
        np.testing.assert_allclose(step.logprobs.chosen, lp[np.arange(3), step.tokens], atol=1e-5)
        np.testing.assert_allclose(step.logprobs.top, -np.sort(-lp, axis=1)[:, :3], atol=1e-5)
        np.testing.assert_array_equal(np.take_along_axis(lp, step.logprobs.top_ids, 1), step.logprobs.top)
        logits = reference.step(sequences[:, 6 + t])


def test_logprobs_with_beam_search_are_refused():
    with pytest.raises(UsageError, match="logprobs"):
        GenerationConfig(num_beams=2, logprobs=1)
