"""The server's parts without a server: a choice's text as tokens arrive (stop strings, held-back text, bytes of a
character split across tokens, logprob attribution), requests into engine options, metrics text, and the runtime
staying free of FastAPI."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memgpt_runtime.server import protocol as p
from memgpt_runtime.server.errors import BadRequest
from memgpt_runtime.server.metrics import Metrics
from memgpt_runtime.server.text import ChoiceText

EOS = 99
PIECES = {
    1: b"Hel",
    2: b"lo",
    3: b" wo",
    4: b"rld",
    5: b"!",
    6: b"\xc3",
    7: b"\xa9",
    8: b"a",
    9: b"b",
    10: b"ab",
    11: b"ba",
    12: b"c",
    EOS: b"",
}


class Bytes:
    """A tokenizer whose tokens are byte strings (a byte-level BPE in miniature); an EOS that decodes to nothing."""

    def decode(self, ids, skip_special_tokens=False):
        return b"".join(PIECES[i] for i in ids).decode("utf-8", "replace")


def run(tokens, stop=(), end=True):
    """Push `tokens`, taking after each; returns the choice and the pieces taken."""
    choice = ChoiceText(Bytes(), stop, eos_ids=[EOS])
    pieces = []
    for t in tokens:
        choice.push(t, logprob=-float(t))
        pieces.append(choice.take())
    if end:
        choice.end()
        pieces.append(choice.take())
    return choice, pieces


def test_text_and_tokens_as_they_arrive():
    choice, pieces = run([1, 2, 3, 4, 5])
    assert [text for text, _ in pieces] == ["Hel", "lo", " wo", "rld", "!", ""]
    assert choice.text == "Hello world!" and choice.finish_reason == "length" and choice.count == 5
    assert [[t.text for t in toks] for _, toks in pieces] == [["Hel"], ["lo"], [" wo"], ["rld"], ["!"], []]


def test_a_character_split_across_tokens_comes_with_the_token_that_completes_it():
    choice, pieces = run([8, 6, 7, 8])
    assert [text for text, _ in pieces] == ["a", "", "é", "a", ""]
    assert [(t.token_id, t.text) for t in choice.tokens] == [(8, "a"), (6, ""), (7, "é"), (8, "a")]
    assert "".join(t.text for t in choice.tokens) == choice.text == "aéa"


def test_a_stop_string_across_tokens_is_cut_and_never_released():
    choice, pieces = run([1, 2, 3, 4], stop=["lo w"], end=False)
    assert choice.text == "Hel" and choice.finish_reason == "stop" and choice.count == 3
    assert "".join(text for text, _ in pieces) == "Hel"
    assert [t.text for _, toks in pieces for t in toks] == ["Hel"]  # "lo" begins inside the stop string


def test_text_that_could_start_a_stop_string_is_held_back():
    choice = ChoiceText(Bytes(), ["rld!?"], eos_ids=[EOS])
    choice.push(1)
    choice.push(2)
    assert choice.take()[0] == "H"  # the last len("rld!?") - 1 = 4 characters could begin the stop string
    choice.push(3)
    assert choice.take()[0] == "ell"
    choice.end()
    assert choice.take()[0] == "o wo" and choice.text == "Hello wo"


def test_eos_ends_the_choice_counts_and_adds_no_token():
    choice, pieces = run([1, EOS, 2])
    assert choice.text == "Hel" and choice.finish_reason == "stop" and choice.count == 2
    assert [t.token_id for t in choice.tokens] == [1]


def test_logprobs_stay_with_their_tokens():
    choice, _ = run([1, 2, 3])
    assert [(t.token_id, t.logprob, t.start) for t in choice.tokens] == [(1, -1.0, 0), (2, -2.0, 3), (3, -3.0, 5)]


@settings(max_examples=300, deadline=None)
@given(
    tokens=st.lists(st.sampled_from([8, 9, 10, 11, 12, 6, 7]), max_size=14),
    stop=st.lists(st.sampled_from(["ab", "bc", "ca", "b", "aab", "é", "cab"]), max_size=3),
)
def test_pieces_join_to_the_text_cut_before_the_first_stop(tokens, stop):
    choice, pieces = run(tokens, stop)
    whole = Bytes().decode(tokens)
    cuts = [whole.find(s) for s in stop if s in whole]
    assert choice.text == (whole[: min(cuts)] if cuts else whole)
    assert "".join(text for text, _ in pieces) == choice.text
    assert not any(s in choice.text for s in stop)
    released = "".join(text for text, _ in pieces[:-1])
    assert choice.text.startswith(released)
    joined = "".join(t.text for _, toks in pieces for t in toks)
    assert joined.startswith(choice.text) and (cuts or joined == choice.text)


# -- requests into engine options --------------------------------------------------------------------------------


def job(body: dict, defaults=None, chat=True):
    model = p.ChatRequest if chat else p.CompletionRequest
    base = {"messages": [{"role": "user", "content": "hi"}]} if chat else {"prompt": "hi"}
    import json

    return p.build_job(p.parse(model, json.dumps({**base, **body}).encode()), [[1, 2]], defaults or {}, 100)


@pytest.mark.parametrize(
    "body, options",
    [
        ({}, dict(num_beams=1, do_sample=True, temperature=1.0, top_p=1.0, top_k=0, seed=None, num_return_sequences=1)),
        ({"temperature": 0}, dict(num_beams=1, do_sample=False, num_return_sequences=1)),
        (
            {"temperature": 0.5, "top_k": -1, "n": 3, "seed": 4},
            dict(num_beams=1, do_sample=True, temperature=0.5, top_p=1.0, top_k=0, seed=4, num_return_sequences=3),
        ),
        (
            {"use_beam_search": True, "n": 4, "length_penalty": 0.5, "early_stopping": "never"},
            dict(num_beams=4, num_return_sequences=4, do_sample=False, length_penalty=0.5, early_stopping="never"),
        ),
        (
            {
                "temperature": 0,
                "presence_penalty": 0.5,
                "repetition_penalty": 1.1,
                "min_tokens": 3,
                "logprobs": True,
                "top_logprobs": 2,
            },
            dict(
                num_beams=1,
                do_sample=False,
                num_return_sequences=1,
                presence_penalty=0.5,
                repetition_penalty=1.1,
                min_new_tokens=3,
                logprobs=2,
            ),
        ),
    ],
)
def test_requests_become_engine_options(body, options):
    assert job(body).options == options


def test_greedy_with_n_is_one_generation_answered_n_times():
    j = job({"temperature": 0, "n": 3})
    assert j.copies and j.n == 3 and j.options["num_return_sequences"] == 1


def test_a_sampling_model_default_comes_before_openais():
    defaults = {"do_sample": True, "temperature": 0.6, "top_p": 0.9, "max_new_tokens": 50}
    j = job({}, defaults)
    assert (j.options["temperature"], j.options["top_p"], j.max_tokens, j.max_tokens_asked) == (0.6, 0.9, 50, False)
    assert job({"temperature": 1.2}, defaults).options["temperature"] == 1.2
    assert job({}, {"temperature": 0.6}).options["temperature"] == 1.0  # a greedy model's temperature is no default
    assert job({}, chat=False).max_tokens == 16


@pytest.mark.parametrize(
    "body, field",
    [
        ({"max_tokens": 5, "max_completion_tokens": 0}, "max_completion_tokens"),
        ({"top_k": 1000}, "top_k"),
        ({"use_beam_search": True, "seed": 1}, "seed"),
        ({"use_beam_search": True, "logprobs": True}, "logprobs"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"stream": True, "stream_options": {"continuous_usage_stats": True}}, "stream_options"),
    ],
)
def test_bad_requests_name_the_field(body, field):
    with pytest.raises(BadRequest) as error:
        job(body)
    assert error.value.param == field and error.value.status == 400


def test_developer_role_is_the_system_role_and_text_parts_join():
    messages = [
        p.Message(role="developer", content="be brief"),
        p.Message(role="user", content=[p.TextPart(type="text", text="a"), p.TextPart(type="text", text="b")]),
    ]
    assert p.chat_messages(messages) == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a\nb"}]


# -- metrics and the runtime's imports ---------------------------------------------------------------------------


def test_metrics_text_is_prometheus_exposition():
    m = Metrics()
    m.request_done("/v1/completions", 200)
    m.generation_done(5, 10, ["stop", "length"], submitted=1.0, first_token=1.2, finished=2.1)
    text = m.render(running=2, waiting=1, loaded=True)
    lines = text.splitlines()
    assert "memgpt_requests_running 2" in lines and "memgpt_requests_waiting 1" in lines
    assert 'memgpt_http_requests_total{route="/v1/completions",code="200"} 1' in lines
    assert 'memgpt_time_to_first_token_seconds_bucket{le="0.25"} 1' in lines
    assert 'memgpt_time_to_first_token_seconds_bucket{le="0.1"} 0' in lines
    assert "memgpt_time_per_output_token_seconds_count 1" in lines and "memgpt_generation_tokens_total 10" in lines
    assert all(line.startswith("#") or len(line.split(" ")) == 2 for line in lines)


def test_the_runtime_never_imports_the_server_stack():
    code = (
        "import sys, memgpt_runtime, memgpt_runtime.engine, memgpt_runtime.cli\n"
        "memgpt_runtime.cli.build_parser()\n"
        "print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette', 'sse_starlette', 'pydantic') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_an_error_after_the_stream_started_ends_it_with_an_error_event():
    import asyncio
    import json

    from memgpt_runtime.errors import MemgptError
    from memgpt_runtime.server import app as server_app
    from memgpt_runtime.server.generation import Delta
    from memgpt_runtime.server.responses import ChatWriter

    class Failing:
        prompt, choices, completion_tokens, submitted_at, first_token_at, finished_at = [1, 2], [], 1, 0.0, None, None
        cancelled = False

        async def deltas(self):
            yield [Delta(0, "Hel", [], None)]
            raise MemgptError("the engine stopped: the model failed")

        def cancel(self):
            self.cancelled = True

    class State:
        metrics = Metrics()

    gen = Failing()
    writer = ChatWriter(None, job({"stream": True}), {"id": "x", "created": 0, "model": "m"})

    async def events():
        return [e async for e in server_app._stream(State(), [gen], writer)]

    out = asyncio.run(events())
    assert json.loads(out[0])["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert json.loads(out[1])["choices"][0]["delta"] == {"content": "Hel"}
    assert json.loads(out[2]) == {
        "error": {
            "message": "the engine stopped: the model failed",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }
    assert out[3:] == ["[DONE]"] and gen.cancelled
