"""`memgpt serve` on an encoder-decoder folder (tiny BART with bart-large-cnn's options): /v1/completions answers
with the decoder's text, as `generate()` gives it, greedy, streamed and with beam search; chat is refused."""

from __future__ import annotations

import pytest

import memgpt_runtime as mr
from server_process import ServerProcess, assert_error

SOURCES = ["The quick brown fox jumps over the lazy dog.", "Once upon a time there was a small model."]


@pytest.fixture(scope="module")
def server(tiny_bart_export, tmp_path_factory):
    proc = ServerProcess(
        tiny_bart_export, "--model-name", "bart", log=tmp_path_factory.mktemp("serve-bart") / "server.log"
    )
    try:
        proc.wait_healthy()
        yield proc
    finally:
        assert proc.stop() == 0, proc.output()


@pytest.fixture(scope="module")
def lm(tiny_bart_export):
    return mr.load(tiny_bart_export)


@pytest.mark.parametrize("source", SOURCES)
def test_completion_is_the_decoders_text(server, lm, source):
    client = server.client()
    expected = lm.generate_text(source, max_new_tokens=12, num_beams=1, do_sample=False)
    out = client.completions.create(model="bart", prompt=source, max_tokens=12, temperature=0)
    assert out.choices[0].text == expected
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(model="bart", prompt=source, max_tokens=12, temperature=0, stream=True)
    )
    assert streamed == expected
    assert out.usage.prompt_tokens == len(lm.encode_prompt(source))


def test_beam_search_uses_the_models_own_beam_options(server, lm):
    expected = lm.generate_text(SOURCES[0], max_new_tokens=12, num_beams=3, num_return_sequences=3)
    out = server.client().completions.create(
        model="bart", prompt=SOURCES[0], max_tokens=12, n=3, extra_body={"use_beam_search": True}
    )
    assert [c.text for c in out.choices] == expected


def test_chat_is_refused_without_a_chat_template(server):
    status, _, body = server.request("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})
    assert_error(status, body, 400, param="messages")
    assert "chat template" in body["error"]["message"]
