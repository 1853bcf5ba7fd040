"""Prompt-lookup decoding (`prompt_lookup_num_tokens`): the draft is transformers 4.57's, and the answer is the
plain search's token for token, on a scripted model whose logits do not depend on how positions are grouped,
on tiny fp32 models (PyTorch and ONNX) and next to transformers' own prompt-lookup output; in the engine beside
other requests, from the CLI and from the server; and the options it refuses."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache

import numpy as np
import pytest
import torch

import memgpt_runtime as mr
from memgpt_runtime.config import GenerationConfig
from memgpt_runtime.engine import Engine
from memgpt_runtime.errors import UsageError
from memgpt_runtime.lookup import draft
from memgpt_runtime.processors import build_processors
from memgpt_runtime.request import Done, Request, Step
from memgpt_runtime.search import calls, drive, finish
from memgpt_runtime.server import protocol as p
from memgpt_runtime.server.errors import BadRequest
from torch_state import TorchState, hf_generate, tiny_gpt2, tiny_llama

# -- a scripted model ------------------------------------------------------------------------------------------


class ScriptedState:
    """A `DecoderState` whose next-token logits are a fixed random table of the last two tokens, so a run of
    several positions gives exactly the logits of one position at a time; it records its model calls."""

    def __init__(self, vocab: int = 12, seed: int = 0):
        self.table = np.random.default_rng(seed).normal(0, 3, (vocab, vocab, vocab)).astype(np.float32)
        self.held: list[list[int]] = []  # each row's positions in the cache
        self.calls: list[tuple[str, int]] = []

    def _logits(self, seq: list[int]) -> np.ndarray:
        return self.table[seq[-2] if len(seq) > 1 else 0, seq[-1]]

    def prefill(self, input_ids, attention_mask):
        self.held = [[int(t) for t, m in zip(r, mr_) if m] for r, mr_ in zip(input_ids, attention_mask)]
        self.calls.append(("prefill", input_ids.shape[1]))
        return np.stack([self._logits(h) for h in self.held])

    def step(self, tokens):
        self.calls.append(("forward", 1))
        for row, t in zip(self.held, tokens):
            row.append(int(t))
        return np.stack([self._logits(h) for h in self.held])

    def verify(self, tokens):
        self.calls.append(("verify", tokens.shape[1]))
        out = []
        for row, ts in zip(self.held, tokens):
            out.append([self._logits(row + [int(t) for t in ts[: i + 1]]) for i in range(len(ts))])
            row.extend(int(t) for t in ts)
        return np.asarray(out, np.float32)

    def rewind(self, count):
        self.calls.append(("rewind", count))
        for row in self.held:
            del row[-count:]

    def select(self, rows):
        self.held = [list(self.held[r]) for r in rows]


def run_scripted(prompt, **options):
    state = ScriptedState()
    rng = np.random.default_rng(options.get("seed")) if options.get("do_sample") else None
    request = Request.resolve([prompt], [[1] * len(prompt)], GenerationConfig(**options), rng)
    events = list(drive(state, calls(request)))
    return events, state


SCRIPTED_OPTIONS = [
    dict(),
    dict(eos_token_id=[3]),
    dict(eos_token_id=[3, 7], min_new_tokens=6),
    dict(repetition_penalty=1.4),
    dict(no_repeat_ngram_size=3),
    dict(bad_words_ids=[[4], [5, 6]]),
    dict(forced_eos_token_id=2),
    dict(presence_penalty=0.5, frequency_penalty=0.3),
    dict(logprobs=3),
    dict(do_sample=True, seed=5),
    dict(do_sample=True, seed=9, temperature=0.7, top_k=5, top_p=0.9, eos_token_id=[3]),
]


@pytest.mark.parametrize(
    "options", SCRIPTED_OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "plain"
)
@pytest.mark.parametrize("k, ngram", [(1, None), (3, 1), (10, None), (10, 3)])
def test_lookup_gives_the_plain_search_token_for_token(options, k, ngram):
    prompt = [1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 6, 1, 2]
    plain, _ = run_scripted(prompt, max_new_tokens=40, **options)
    looked, state = run_scripted(
        prompt, max_new_tokens=40, prompt_lookup_num_tokens=k, max_matching_ngram_size=ngram, **options
    )
    ours, theirs = finish(looked), finish(plain)
    np.testing.assert_array_equal(ours.sequences, theirs.sequences)
    np.testing.assert_array_equal(ours.lengths, theirs.lengths)
    steps = [e for e in looked if isinstance(e, Step)]
    assert [int(s.tokens[0]) for s in steps] == ours.sequences[0, len(prompt) :].tolist()  # one Step per token
    if "logprobs" in options:
        for a, b in zip(steps, [e for e in plain if isinstance(e, Step)]):
            np.testing.assert_array_equal(a.logprobs.top_ids, b.logprobs.top_ids)
            np.testing.assert_allclose(a.logprobs.chosen, b.logprobs.chosen, rtol=0, atol=0)
    # the cache holds every token but the last, as after a plain step
    assert state.held[0] == ours.sequences[0, :-1].tolist()


def test_lookup_checks_several_tokens_per_model_call_and_rewinds_the_rejected():
    prompt = [1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 6, 1, 2]
    events, state = run_scripted(prompt, max_new_tokens=40, prompt_lookup_num_tokens=10)
    runs = [c for c in state.calls if c[0] in ("forward", "verify")]
    assert len(runs) < 40 - 1  # fewer model calls than tokens after the first
    assert any(c[0] == "verify" for c in runs) and all(c[1] <= 11 for c in runs)
    assert any(c[0] == "rewind" for c in state.calls)


def test_the_draft_never_passes_max_length():
    events, state = run_scripted([1, 2, 3, 4, 5, 6, 7, 8, 1, 2], max_length=13, prompt_lookup_num_tokens=10)
    assert finish(events).sequences.shape == (1, 13)
    assert all(n <= 3 for kind, n in state.calls if kind == "verify")  # the last token + at most 2 drafted


def test_closing_between_the_steps_of_one_call_stops_the_model():
    state = ScriptedState()
    request = Request.resolve(
        [[1, 2, 3, 1, 2, 3, 1, 2]], [[1] * 8], GenerationConfig(max_new_tokens=30, prompt_lookup_num_tokens=5)
    )
    steps = drive(state, calls(request))
    next(steps)
    before = list(state.calls)
    steps.close()
    assert state.calls == before


# -- the draft is transformers' ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(30))
def test_draft_equals_transformers_candidates(seed):
    from transformers.generation.candidate_generator import PromptLookupCandidateGenerator
    from transformers.generation.logits_process import LogitsProcessorList, NoRepeatNGramLogitsProcessor

    rng = np.random.default_rng(seed)
    seq = rng.integers(0, 6, int(rng.integers(2, 40)))
    k, ngram, eos = int(rng.integers(1, 8)), int(rng.integers(1, 4)), [int(rng.integers(0, 8))]
    banning = seed % 3 == 0
    max_length = len(seq) + 60  # far: transformers does not cap the draft at max_length, we do
    theirs_gen = PromptLookupCandidateGenerator(
        eos_token_id=torch.tensor(eos),
        num_output_tokens=k,
        max_matching_ngram_size=ngram,
        max_length=max_length,
        logits_processor=LogitsProcessorList([NoRepeatNGramLogitsProcessor(3)]) if banning else None,
        vocab_size=8,
    )
    candidates, _ = theirs_gen.get_candidates(torch.from_numpy(seq)[None])
    chain = build_processors(GenerationConfig(no_repeat_ngram_size=3), len(seq)) if banning else None
    ours = draft(seq, k, ngram, max_length, np.array(eos), chain, vocab=8)
    assert ours.tolist() == candidates[0, len(seq) :].tolist()


# -- tiny fp32 models: PyTorch, then ONNX -------------------------------------------------------------------------

GROUNDED = [
    [5, 6, 7, 8, 9, 10, 11, 12, 13, 5, 6, 7],
    [20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 40, 41, 20, 21, 22],
    [3, 4, 50, 60, 70, 3, 4, 50, 9, 3, 4],
]


@cache
def torch_model(name):
    return {"llama": tiny_llama, "gpt2": tiny_gpt2}[name]()


@pytest.mark.parametrize("name", ["llama", "gpt2"])
@pytest.mark.parametrize("prompt", GROUNDED)
@pytest.mark.parametrize("k", [2, 10])
def test_tiny_models_give_plain_greedy_and_transformers_lookup(name, prompt, k):
    ids, mask = np.array([prompt]), np.ones((1, len(prompt)), np.int64)
    eos = (127,)  # transformers' lookup needs an EOS id; both sides stop at it alike
    config = GenerationConfig(max_new_tokens=24, prompt_lookup_num_tokens=k, eos_token_id=eos)
    ours = finish(drive(TorchState(torch_model(name)), calls(Request.resolve(ids, mask, config))))
    plain, _ = hf_generate(torch_model(name), ids, mask, do_sample=False, max_new_tokens=24, eos_token_id=eos)
    theirs, _ = hf_generate(
        torch_model(name), ids, mask, do_sample=False, max_new_tokens=24, eos_token_id=eos, prompt_lookup_num_tokens=k
    )
    np.testing.assert_array_equal(ours.sequences, plain)
    np.testing.assert_array_equal(ours.sequences, theirs[:, : plain.shape[1]])  # transformers may pass max_length


@pytest.fixture(scope="module")
def llama(tiny_llama_export):
    return mr.load(tiny_llama_export)


@pytest.mark.parametrize("fixture", ["tiny_llama_export", "tiny_gpt2_export", "tiny_qwen2_export", "tiny_t5_export"])
@pytest.mark.parametrize(
    "options",
    [dict(), dict(eos_token_id=[9], repetition_penalty=1.2), dict(do_sample=True, seed=3, top_k=20)],
    ids=["plain", "eos,penalty", "sampling"],
)
def test_onnx_exports_give_the_plain_search(request, fixture, options):
    lm = mr.load(request.getfixturevalue(fixture))
    for prompt in GROUNDED:
        plain = lm.generate([prompt], max_new_tokens=30, return_dict_in_generate=True, **options)
        looked = lm.generate(
            [prompt], max_new_tokens=30, return_dict_in_generate=True, prompt_lookup_num_tokens=6, **options
        )
        np.testing.assert_array_equal(looked.sequences, plain.sequences)
        np.testing.assert_array_equal(looked.lengths, plain.lengths)


def test_the_fused_graph_checks_a_draft_in_one_run(llama, monkeypatch):
    from memgpt_runtime.slots import SlotCache

    runs = []
    original = SlotCache.verify
    monkeypatch.setattr(SlotCache, "verify", lambda self, slot, ids: runs.append(len(ids)) or original(self, slot, ids))
    llama.generate([GROUNDED[1]], max_new_tokens=30, prompt_lookup_num_tokens=8)
    assert runs and max(runs) > 2


# -- the engine ---------------------------------------------------------------------------------------------------


def test_engine_runs_lookup_requests_beside_others_with_their_answer_alone(llama):
    jobs = [
        (GROUNDED[0], dict(max_new_tokens=20, prompt_lookup_num_tokens=5)),
        (GROUNDED[1], dict(max_new_tokens=25)),
        (GROUNDED[2], dict(max_new_tokens=18, prompt_lookup_num_tokens=10, do_sample=True, seed=4)),
        (list(range(40, 95)), dict(max_new_tokens=12, num_beams=2)),
        (GROUNDED[1], dict(max_new_tokens=25, prompt_lookup_num_tokens=3, eos_token_id=[9])),
    ]
    with Engine(llama, slots=6) as engine:
        handles = [engine.submit(prompt, **options) for prompt, options in jobs]
        results = [h.result(timeout=120) for h in handles]
    for (prompt, options), result in zip(jobs, results):
        alone = llama.generate([prompt], return_dict_in_generate=True, **options)
        np.testing.assert_array_equal(result.sequences, alone.sequences)
        np.testing.assert_array_equal(result.lengths, alone.lengths)


def test_engine_streams_one_step_per_token(llama):
    with Engine(llama, slots=2) as engine:
        events = list(engine.submit(GROUNDED[1], max_new_tokens=20, prompt_lookup_num_tokens=6))
    steps = [e for e in events if isinstance(e, Step)]
    assert isinstance(events[-1], Done) and len(steps) == int(events[-1].result.lengths[0])


# -- what is refused ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, field",
    [
        (dict(prompt_lookup_num_tokens=0), "prompt_lookup_num_tokens must be >= 1"),
        (dict(prompt_lookup_num_tokens=True), "prompt_lookup_num_tokens must be an integer"),
        (dict(prompt_lookup_num_tokens=3, max_matching_ngram_size=0), "max_matching_ngram_size must be >= 1"),
        (dict(prompt_lookup_num_tokens=3, num_beams=2), "prompt_lookup_num_tokens needs num_beams=1"),
        (
            dict(prompt_lookup_num_tokens=3, do_sample=True, num_return_sequences=2),
            "num_return_sequences must be 1 with prompt_lookup",
        ),
    ],
)
def test_bad_options_name_the_field(options, field):
    with pytest.raises(UsageError, match=field):
        GenerationConfig(**options)


def test_a_batch_is_refused_as_transformers_does(llama):
    with pytest.raises(UsageError, match="one prompt at a time"):
        llama.generate([[5, 6, 7], [8, 9]], prompt_lookup_num_tokens=3)


# -- the CLI and the server -----------------------------------------------------------------------------------------


def memgpt(*args):
    return subprocess.run(
        [sys.executable, "-m", "memgpt_runtime.cli", *map(str, args)], capture_output=True, text=True, timeout=120
    )


def test_cli_flag_gives_the_plain_text(tiny_llama_export, llama):
    text = "the cat sat on the mat and the cat sat on the"
    run = memgpt(
        "generate",
        tiny_llama_export,
        text,
        "--max-new-tokens",
        16,
        "--quiet",
        "--prompt-lookup-num-tokens",
        5,
        "--max-matching-ngram-size",
        3,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == llama.generate_text(text, max_new_tokens=16) + "\n"


def test_cli_refuses_lookup_with_beams_in_one_line(tiny_llama_export):
    run = memgpt("generate", tiny_llama_export, "hi", "--num-beams", 2, "--prompt-lookup-num-tokens", 5)
    assert (
        run.returncode != 0
        and run.stderr.count("\n") == 1
        and "prompt_lookup_num_tokens needs num_beams=1" in run.stderr
    )


def job(body: dict):
    return p.build_job(
        p.parse(p.ChatRequest, json.dumps({"messages": [{"role": "user", "content": "hi"}], **body}).encode()),
        [[1, 2]],
        {},
        100,
    )


def test_server_maps_the_lookup_parameters():
    assert job({"temperature": 0, "prompt_lookup_num_tokens": 8, "max_matching_ngram_size": 3}).options == dict(
        num_beams=1, do_sample=False, num_return_sequences=1, prompt_lookup_num_tokens=8, max_matching_ngram_size=3
    )


@pytest.mark.parametrize(
    "body",
    [
        {"prompt_lookup_num_tokens": 0},
        {"prompt_lookup_num_tokens": 65},
        {"prompt_lookup_num_tokens": 4, "use_beam_search": True, "n": 2},
        {"prompt_lookup_num_tokens": 4, "temperature": 0.7, "n": 2},
    ],
)
def test_server_refuses_bad_lookup_requests_naming_the_field(body):
    with pytest.raises(BadRequest) as caught:
        job(body)
    assert caught.value.param == "prompt_lookup_num_tokens"


def test_served_lookup_answer_equals_generate(tiny_llama_export, llama, tmp_path):
    from server_process import ServerProcess

    server = ServerProcess(tiny_llama_export, log=tmp_path / "serve.log")
    try:
        server.wait_healthy()
        body = {"prompt": GROUNDED[1], "max_tokens": 20, "temperature": 0, "prompt_lookup_num_tokens": 6}
        status, _, reply = server.request("POST", "/v1/completions", body)
    finally:
        server.stop()
    assert status == 200, reply
    expected = llama.generate([GROUNDED[1]], max_new_tokens=20)[0, len(GROUNDED[1]) :]
    assert reply["choices"][0]["text"] == llama.tokenizer.decode(expected, skip_special_tokens=True)


def test_pacing_checks_nothing_while_drafts_are_wrong_and_more_as_they_are_kept():
    from memgpt_runtime.lookup import Pacing

    pacing = Pacing(10)
    for _ in range(3):
        pacing.record(0, True)  # three drafts whose first token the model did not pick
    assert pacing.limit() == 0  # plain steps
    limits = []
    for _ in range(6):
        pacing.record(10, False)  # drafts kept whole
        limits.append(pacing.limit())
    assert limits == sorted(limits) and 0 < limits[0] and limits[-1] <= 10
    assert limits[-1] > 3
    pacing.record(0, True)
    assert pacing.limit() < limits[-1]  # a miss shortens the next check


def test_pacing_checks_a_token_at_a_lower_chance_when_a_plain_step_runs_two_positions_anyway():
    from memgpt_runtime.lookup import Pacing

    one, two = Pacing(10, free=1), Pacing(10, free=2)
    for pacing in (one, two):
        pacing.record(0, True)
        pacing.record(0, True)  # a chance of about one in five
    assert one.limit() == 0 and two.limit() == 1
    for pacing in (one, two):
        for _ in range(10):
            pacing.record(0, True)
    assert one.limit() == two.limit() == 0  # a check still costs a little more than a plain step


def test_pacing_never_checks_more_than_asked():
    from memgpt_runtime.lookup import Pacing

    pacing = Pacing(3, free=2)
    for _ in range(10):
        pacing.record(3, False)
    assert pacing.limit() == 3
