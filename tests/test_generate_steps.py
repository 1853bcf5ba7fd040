"""`LanguageModel` over the step iterator: `generate_steps`, the lengths of `generate`, the length policy at
the model's context, and streaming that stops the model when its reader stops."""

from __future__ import annotations

import numpy as np
import pytest

import memgpt_runtime as mr

PROMPTS = [[5, 6, 7], [3, 4, 50, 6, 7, 9]]


@pytest.fixture(scope="module")
def lm(tiny_llama_export):
    return mr.load(tiny_llama_export)


DISTINCT = dict(no_repeat_ngram_size=1)  # the tiny model repeats its last token; this makes every new token new


def new_token(lm, ids: list[int], at: int) -> int:
    """The greedy continuation's token at position `at` (it appears nowhere earlier in the row)."""
    return int(lm.generate([ids], max_new_tokens=at + 1, eos_token_id=[], **DISTINCT)[0, len(ids) + at])


def test_steps_carry_the_tokens_of_generate(lm):
    options = dict(max_new_tokens=8, eos_token_id=[])
    events = list(lm.generate_steps(PROMPTS, **options))
    assert isinstance(events[-1], mr.Done) and all(isinstance(e, mr.Step) for e in events[:-1])
    expected = lm.generate(PROMPTS, **options)
    np.testing.assert_array_equal(events[-1].result.sequences, expected)
    np.testing.assert_array_equal(np.stack([e.tokens for e in events[:-1]], axis=1), expected[:, 6:])


def test_generate_returns_lengths_with_the_eos_and_without_padding(lm):
    eos = new_token(lm, PROMPTS[0], 2)
    result = lm.generate(
        PROMPTS, max_new_tokens=8, eos_token_id=eos, pad_token_id=0, return_dict_in_generate=True, **DISTINCT
    )
    new = result.sequences[:, 6:]
    for row, length in zip(new.tolist(), result.lengths.tolist()):
        expected = row.index(eos) + 1 if eos in row else len(row)
        assert length == expected
        assert set(row[length:]) <= {0}
    assert result.lengths[0] == 3


def test_beam_search_lengths(lm):
    result = lm.generate(PROMPTS, num_beams=3, num_return_sequences=2, max_new_tokens=6, return_dict_in_generate=True)
    assert result.lengths.shape == (4,) and result.lengths.max() == result.sequences.shape[1] - 6


def test_default_length_stops_at_the_context(lm, monkeypatch):
    monkeypatch.delitem(lm.manifest.generation_defaults, "max_new_tokens")  # the tiny model's own length
    context = lm.manifest.context_length
    result = lm.generate([[5] * (context - 5)], eos_token_id=[], return_dict_in_generate=True)
    assert result.sequences.shape == (1, context) and result.lengths.tolist() == [5]
    wider = lm.generate([[5] * (context - 5)], eos_token_id=[], default_new_tokens=100, return_dict_in_generate=True)
    assert wider.lengths.tolist() == [5]
    assert lm.generate([[5, 6]], eos_token_id=[], default_new_tokens=30).shape == (1, 32)


def test_a_prompt_that_fills_the_context_is_refused(lm):
    context = lm.manifest.context_length
    with pytest.raises(
        mr.PromptTooLongError, match=f"the prompt has {context} tokens but the model's context is {context}"
    ):
        lm.generate([[5] * context])


class CountingState:
    """A real `DecoderState` that counts its decode steps."""

    def __init__(self, state) -> None:
        self.state, self.steps = state, 0

    def prefill(self, input_ids, attention_mask):
        return self.state.prefill(input_ids, attention_mask)

    def step(self, tokens):
        self.steps += 1
        return self.state.step(tokens)

    def select(self, rows):
        self.state.select(rows)


@pytest.fixture
def counted(lm, monkeypatch) -> list[CountingState]:
    states: list[CountingState] = []
    new_state = lm.session.new_state

    def counting(*args, **kwargs):
        states.append(CountingState(new_state(*args, **kwargs)))
        return states[-1]

    monkeypatch.setattr(lm.session, "new_state", counting)
    return states


def test_closing_the_text_stream_stops_the_model(lm, counted):
    pieces = lm.generate_text("Hello world", stream=True, max_new_tokens=40, eos_token_id=[])
    next(pieces)
    taken = counted[0].steps
    pieces.close()
    assert counted[0].steps == taken < 39
    with pytest.raises(StopIteration):
        next(pieces)
    assert counted[0].steps == taken


def test_stream_returns_the_result(lm, counted):
    pieces = lm.generate_text("Hello world", stream=True, max_new_tokens=6, eos_token_id=[])
    text = []
    while True:
        try:
            text.append(next(pieces))
        except StopIteration as end:
            result = end.value
            break
    ids = lm.tokenizer.encode("Hello world")
    assert "".join(text) == lm.generate_text("Hello world", max_new_tokens=6, eos_token_id=[])
    np.testing.assert_array_equal(result.sequences, lm.generate([ids], max_new_tokens=6, eos_token_id=[]))
    assert result.lengths.tolist() == [6] and counted[0].steps == 5
