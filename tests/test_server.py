"""`memgpt serve` as a client sees it: one real server process on the tiny Llama, the real `openai` client.

Answers equal `generate()` of the same request (greedy, seeded sampling, beam search), streamed equals
non-streamed, stop strings never leak, usage is exact, logprobs are the model's, every error comes in OpenAI's shape
with its status, a client that leaves frees its rows, and concurrent clients get the answers they get alone.
"""

from __future__ import annotations

import json
import socket
import threading

import numpy as np
import pytest

from memgpt_runtime.processors import log_softmax
from server_process import KEY, MESSAGES, NAME, wait_until

PROMPTS = ["The quick brown fox", "Once upon a time there was", "def main():"]
CANCELLED = 'memgpt_choices_finished_total{reason="cancelled"}'


def new_ids(lm, prompt, **options):
    """The token ids generate() gives `prompt` alone, each row cut at its length (EOS included)."""
    res = lm.generate([prompt], return_dict_in_generate=True, **options)
    return [row[len(prompt) : len(prompt) + n].tolist() for row, n in zip(res.sequences, res.lengths)]


def text_of(lm, ids) -> str:
    return lm.tokenizer.decode(ids, skip_special_tokens=True)


def ids_of(logprobs_content) -> list[int]:
    return [int(t.token.split(":")[1]) for t in logprobs_content]


# -- answers equal generate() -------------------------------------------------------------------------------------


@pytest.mark.parametrize("messages", MESSAGES)
def test_chat_greedy_equals_generate(server, client, lm, messages):
    prompt = lm.encode_prompt(messages)
    out = client.chat.completions.create(
        model=NAME,
        messages=messages,
        max_tokens=20,
        temperature=0,
        logprobs=True,
        extra_body={"return_tokens_as_token_ids": True},
    )
    (expected,) = new_ids(lm, prompt, max_new_tokens=20)
    choice = out.choices[0]
    eos = expected[-1] in lm.generation_config().eos_token_id
    assert ids_of(choice.logprobs.content) == (expected[:-1] if eos else expected)
    assert choice.message.content == text_of(lm, expected)
    assert choice.finish_reason == ("stop" if eos else "length")
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (len(prompt), len(expected))
    assert out.usage.total_tokens == len(prompt) + len(expected)
    assert out.model == NAME and out.object == "chat.completion"


@pytest.mark.parametrize("prompt", PROMPTS)
def test_completion_greedy_equals_generate_from_text_and_from_ids(client, lm, prompt):
    ids = lm.encode_prompt(prompt)
    (expected,) = new_ids(lm, ids, max_new_tokens=16)
    by_text = client.completions.create(model=NAME, prompt=prompt, max_tokens=16, temperature=0)
    by_ids = client.completions.create(model=NAME, prompt=ids, max_tokens=16, temperature=0)
    echoed = client.completions.create(model=NAME, prompt=prompt, max_tokens=16, temperature=0, echo=True)
    assert by_text.choices[0].text == by_ids.choices[0].text == text_of(lm, expected)
    assert echoed.choices[0].text == text_of(lm, ids) + text_of(lm, expected)
    assert by_ids.usage.prompt_tokens == len(ids) and by_ids.usage.completion_tokens == len(expected)


def test_completion_list_of_prompts_gives_n_choices_each_in_order(client, lm):
    rows = [lm.encode_prompt(p) for p in PROMPTS[:2]]
    out = client.completions.create(model=NAME, prompt=rows, max_tokens=8, temperature=0, n=2)
    texts = [c.text for c in sorted(out.choices, key=lambda c: c.index)]
    expected = [text_of(lm, new_ids(lm, r, max_new_tokens=8)[0]) for r in rows]
    assert texts == [expected[0], expected[0], expected[1], expected[1]]
    assert out.usage.completion_tokens == 4 * 8 and out.usage.prompt_tokens == sum(map(len, rows))


def test_seeded_sampling_with_n_equals_generate_and_repeats(client, lm):
    prompt = lm.encode_prompt(MESSAGES[0])
    options = dict(
        model=NAME,
        messages=MESSAGES[0],
        max_tokens=12,
        temperature=0.8,
        top_p=0.9,
        n=3,
        seed=11,
        logprobs=True,
        extra_body={"top_k": 40, "return_tokens_as_token_ids": True},
    )
    first = client.chat.completions.create(**options)
    again = client.chat.completions.create(**options)
    expected = new_ids(
        lm,
        prompt,
        max_new_tokens=12,
        do_sample=True,
        temperature=0.8,
        top_p=0.9,
        top_k=40,
        seed=11,
        num_return_sequences=3,
    )
    eos = set(lm.generation_config().eos_token_id)
    for run in (first, again):
        got = [ids_of(c.logprobs.content) for c in sorted(run.choices, key=lambda c: c.index)]
        assert got == [e[:-1] if e[-1] in eos else e for e in expected]
    assert first.usage.completion_tokens == sum(map(len, expected))


def test_beam_search_as_vllm_spells_it_equals_generate(client, lm):
    prompt = lm.encode_prompt(PROMPTS[1])
    out = client.completions.create(
        model=NAME,
        prompt=PROMPTS[1],
        max_tokens=10,
        n=3,
        extra_body={"use_beam_search": True, "length_penalty": 0.7, "early_stopping": True},
    )
    expected = new_ids(
        lm, prompt, max_new_tokens=10, num_beams=3, num_return_sequences=3, length_penalty=0.7, early_stopping=True
    )
    assert [c.text for c in out.choices] == [text_of(lm, e) for e in expected]
    assert out.usage.completion_tokens == sum(map(len, expected))


@pytest.mark.parametrize(
    "extra",
    [
        dict(presence_penalty=1.5),
        dict(frequency_penalty=0.9),
        dict(presence_penalty=-0.5, frequency_penalty=2.0),
        dict(extra_body={"repetition_penalty": 1.4}),
    ],
)
def test_penalties_equal_generate(client, lm, extra):
    prompt = lm.encode_prompt(PROMPTS[0])
    out = client.completions.create(model=NAME, prompt=PROMPTS[0], max_tokens=24, temperature=0, **extra)
    options = {k: v for k, v in extra.items() if k != "extra_body"} | extra.get("extra_body", {})
    (expected,) = new_ids(lm, prompt, max_new_tokens=24, **options)
    assert out.choices[0].text == text_of(lm, expected)


# -- streaming ---------------------------------------------------------------------------------------------------


def collect_stream(stream, chat: bool):
    texts, reasons, usage, chunks = {}, {}, None, 0
    for chunk in stream:
        chunks += 1
        if not chunk.choices:
            usage = chunk.usage
            continue
        assert chunk.usage is None
        for c in chunk.choices:
            piece = c.delta.content if chat else c.text
            texts[c.index] = texts.get(c.index, "") + (piece or "")
            if c.finish_reason:
                reasons[c.index] = c.finish_reason
    return texts, reasons, usage, chunks


@pytest.mark.parametrize("options", [dict(temperature=0), dict(temperature=1.0, seed=3, n=2), dict(temperature=0, n=2)])
def test_chat_streamed_equals_non_streamed_with_usage_last(client, options):
    base = dict(model=NAME, messages=MESSAGES[1], max_tokens=16, **options)
    whole = client.chat.completions.create(**base)
    texts, reasons, usage, chunks = collect_stream(
        client.chat.completions.create(**base, stream=True, stream_options={"include_usage": True}), chat=True
    )
    assert [texts[c.index] for c in whole.choices] == [c.message.content for c in whole.choices]
    assert [reasons[c.index] for c in whole.choices] == [c.finish_reason for c in whole.choices]
    assert usage == whole.usage and chunks > 2


def test_completion_streamed_equals_non_streamed_with_echo_and_logprobs(client):
    base = dict(model=NAME, prompt=PROMPTS[2], max_tokens=16, temperature=0, echo=True)
    whole = client.completions.create(**base)
    texts, reasons, usage, _ = collect_stream(client.completions.create(**base, stream=True), chat=False)
    assert texts[0] == whole.choices[0].text and reasons[0] == whole.choices[0].finish_reason and usage is None
    whole = client.completions.create(model=NAME, prompt=PROMPTS[2], max_tokens=16, temperature=0, logprobs=2)
    streamed = list(
        client.completions.create(model=NAME, prompt=PROMPTS[2], max_tokens=16, temperature=0, logprobs=2, stream=True)
    )
    tokens = [t for c in streamed for t in (c.choices[0].logprobs.tokens if c.choices[0].logprobs else [])]
    assert tokens == whole.choices[0].logprobs.tokens


def test_streams_without_include_usage_carry_no_usage(client):
    chunks = list(client.chat.completions.create(model=NAME, messages=MESSAGES[0], max_tokens=4, stream=True))
    assert all(c.usage is None and c.choices for c in chunks)


# -- stop strings ------------------------------------------------------------------------------------------------


def greedy_tokens(client, prompt: str, n: int):
    out = client.completions.create(model=NAME, prompt=prompt, max_tokens=n, temperature=0, logprobs=0)
    return out.choices[0].text, out.choices[0].logprobs.tokens


def boundary_stops(text: str, tokens: list[str]):
    """Stop strings that start inside one token and end inside a later one, with the answer cut before each."""
    cases, start = [], 0
    for i, tok in enumerate(tokens[:-1]):
        nxt = tokens[i + 1]
        end = start + len(tok)
        if len(tok) >= 1 and len(nxt) >= 1:
            stop = tok[-1:] + nxt[:2]
            cut = text.find(stop)
            # the completion counts every token up to the one that completes the stop string
            done, count = cut + len(stop), 0
            for t in tokens:
                count += 1
                done -= len(t)
                if done <= 0:
                    break
            cases.append((stop, text[:cut], count))
        start = end
    return cases


@pytest.mark.parametrize("prompt", PROMPTS)
def test_stop_strings_across_token_boundaries_never_leak(client, prompt):
    text, tokens = greedy_tokens(client, prompt, 24)
    assert "".join(tokens) == text
    cases = boundary_stops(text, tokens)[:4]
    assert cases, tokens
    for stop, expected, count in cases:
        whole = client.completions.create(
            model=NAME, prompt=prompt, max_tokens=24, temperature=0, stop=[stop, "never-seen-zz"]
        )
        assert whole.choices[0].text == expected and whole.choices[0].finish_reason == "stop", (stop, text)
        assert whole.usage.completion_tokens == count
        pieces = [
            c.choices[0].text
            for c in client.completions.create(
                model=NAME, prompt=prompt, max_tokens=24, temperature=0, stop=stop, stream=True
            )
        ]
        assert "".join(pieces) == expected
        assert all(stop not in "".join(pieces[: i + 1]) for i in range(len(pieces)))


def test_stop_string_per_choice_with_n(client):
    texts = client.chat.completions.create(
        model=NAME, messages=MESSAGES[2], max_tokens=20, temperature=1.0, n=3, seed=5
    )
    longest = max((c.message.content for c in texts.choices), key=len)
    assert len(longest) >= 5
    stop = longest[3:5]
    out = client.chat.completions.create(
        model=NAME, messages=MESSAGES[2], max_tokens=20, temperature=1.0, n=3, seed=5, stop=stop
    )
    for full, cut in zip(texts.choices, out.choices):
        at = full.message.content.find(stop)
        assert cut.message.content == (full.message.content if at == -1 else full.message.content[:at])
        assert cut.finish_reason == (full.finish_reason if at == -1 else "stop")


# -- logprobs ----------------------------------------------------------------------------------------------------


def test_chat_logprobs_join_to_the_text_and_are_the_models(client, lm):
    prompt = lm.encode_prompt(MESSAGES[0])
    out = client.chat.completions.create(
        model=NAME, messages=MESSAGES[0], max_tokens=12, temperature=0, logprobs=True, top_logprobs=3
    )
    content = out.choices[0].logprobs.content
    assert "".join(t.token for t in content) == out.choices[0].message.content
    (expected,) = new_ids(lm, prompt, max_new_tokens=12)
    logits = lm.logits([prompt + expected])[0]  # (positions, vocab)
    for i, (t, token_id) in enumerate(zip(content, expected)):
        reference = log_softmax(logits[len(prompt) - 1 + i])
        np.testing.assert_allclose(t.logprob, reference[token_id], atol=1e-4)
        assert len(t.top_logprobs) == 3 and t.top_logprobs[0].logprob == pytest.approx(t.logprob, abs=1e-6)
        assert [a.logprob for a in t.top_logprobs] == sorted((a.logprob for a in t.top_logprobs), reverse=True)
        assert bytes(t.bytes) == t.token.encode()


def test_completion_logprobs_offsets_match_the_text(client):
    out = client.completions.create(model=NAME, prompt=PROMPTS[0], max_tokens=10, temperature=0, logprobs=3, echo=False)
    lp, text = out.choices[0].logprobs, out.choices[0].text
    assert "".join(lp.tokens) == text
    assert all(text[o:].startswith(t) for o, t in zip(lp.text_offset, lp.tokens))
    assert all(len(alts) <= 3 for alts in lp.top_logprobs)


# -- disconnects and concurrency ---------------------------------------------------------------------------------


def raw_request(server, body: dict) -> socket.socket:
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    head = (
        f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    sock.sendall(head.encode() + data)
    return sock


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_leaves_frees_its_rows(server, stream):
    cancelled = server.metric(CANCELLED, default=0)
    sock = raw_request(
        server,
        {"prompt": "Once upon a time", "max_tokens": 240, "temperature": 1.0, "n": 8, "seed": 1, "stream": stream},
    )
    if stream:
        seen = b""
        while b"data:" not in seen and len(seen) < 100_000:  # the stream has started
            seen += sock.recv(4096)
        assert b"data:" in seen
    else:
        assert wait_until(lambda: server.metric("memgpt_requests_running") > 0, 10)
    sock.close()
    assert wait_until(lambda: server.metric("memgpt_requests_running") == 0)
    # the choices still generating when the client left were cut short (some may have met EOS before)
    assert wait_until(lambda: server.metric(CANCELLED, default=0) > cancelled)
    assert server.metric("memgpt_requests_waiting") == 0


def test_concurrent_clients_get_the_answers_they_get_alone(client):
    jobs = [
        lambda i=i: (
            client.chat.completions.create(model=NAME, messages=MESSAGES[i], max_tokens=16 + i, temperature=0)
            .choices[0]
            .message.content
        )
        for i in range(3)
    ] + [
        lambda: [
            c.message.content
            for c in client.chat.completions.create(
                model=NAME, messages=MESSAGES[0], max_tokens=14, temperature=0.9, n=2, seed=4
            ).choices
        ],
        lambda: [
            c.text
            for c in client.completions.create(
                model=NAME, prompt=PROMPTS[0], max_tokens=9, n=2, extra_body={"use_beam_search": True}
            ).choices
        ],
        lambda: (
            client.completions.create(model=NAME, prompt=PROMPTS[1], max_tokens=20, temperature=0, stop=" t")
            .choices[0]
            .text
        ),
        lambda: "".join(
            c.choices[0].text
            for c in client.completions.create(
                model=NAME, prompt=PROMPTS[2], max_tokens=30, temperature=0.7, seed=9, stream=True
            )
        ),
        lambda: (
            client.completions.create(model=NAME, prompt=PROMPTS[0], max_tokens=12, presence_penalty=1.0, temperature=0)
            .choices[0]
            .text
        ),
    ]
    alone = [job() for job in jobs]
    together = [None] * len(jobs)

    def run(i):
        together[i] = jobs[i]()

    for _ in range(2):
        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert together == alone
