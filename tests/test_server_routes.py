"""`memgpt serve`'s errors and its other routes, as a client sees them: one real server process on the tiny Llama.

Every error comes in OpenAI's shape with its status (validation, unsupported parameters, context length, the API
key, unknown routes and bad JSON); /v1/models, /tokenize, /detokenize and /metrics answer what they should.
"""

from __future__ import annotations

import openai
import pytest

from server_process import KEY, MESSAGES, NAME, assert_error

# -- errors: OpenAI's shape and status ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, param",
    [
        ({"top_p": 1.5}, "top_p"),
        ({"temperature": -1}, "temperature"),
        ({"n": 0}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"best_of": 2}, "best_of"),
        ({"logit_bias": {"5": 1.0}}, "logit_bias"),
        ({"suffix": "x"}, "suffix"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"frequency_penalty": float("nan")}, "frequency_penalty"),
        ({"logprobs": 50}, "logprobs"),
        ({"stop": [""]}, "stop"),
        ({"seed": -1}, "seed"),
        ({"whatever": 1}, "whatever"),
        ({"max_tokens": True}, "max_tokens"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"use_beam_search": True, "n": 2, "temperature": 0.7}, "temperature"),
        ({"length_penalty": 0.5}, "length_penalty"),
        ({"prompt": [1, 2, 100000]}, "prompt"),
        ({"prompt": []}, "prompt"),
    ],
)
def test_bad_completion_parameters_get_400_naming_the_field(server, body, param):
    status, _, answer = server.request(
        "POST", "/v1/completions", {"model": NAME, "prompt": "hi", "max_tokens": 4, **body}
    )
    assert_error(status, answer, 400, param=param)


@pytest.mark.parametrize(
    "body, param",
    [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages.0.content",
        ),
    ],
)
def test_unsupported_chat_parameters_get_400_saying_so(server, body, param):
    request = {"model": NAME, "messages": MESSAGES[0], "max_tokens": 4, **body}
    status, _, answer = server.request("POST", "/v1/chat/completions", request)
    assert_error(status, answer, 400, param=param)


def test_openai_client_sees_the_errors(client):
    with pytest.raises(openai.BadRequestError, match="top_p"):
        client.chat.completions.create(model=NAME, messages=MESSAGES[0], top_p=2.0)
    with pytest.raises(openai.NotFoundError, match="does not exist") as error:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES[0])
    assert error.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as error:
        client.completions.create(model=NAME, prompt="hello", max_tokens=1000)
    assert error.value.code == "context_length_exceeded"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{client.base_url}", api_key="wrong", max_retries=0).models.list()


def test_context_length_exceeded_by_prompt_or_max_tokens(server, lm):
    long_prompt = list(range(10, 200)) * 2  # 380 ids, past the tiny model's 256 positions
    status, _, body = server.request("POST", "/v1/completions", {"prompt": long_prompt, "max_tokens": 4})
    assert_error(status, body, 400, param="prompt", code="context_length_exceeded")
    status, _, body = server.request(
        "POST", "/v1/chat/completions", {"messages": MESSAGES[0], "max_completion_tokens": 250}
    )
    assert_error(status, body, 400, param="messages", code="context_length_exceeded")
    status, _, body = server.request("POST", "/v1/completions", {"prompt": long_prompt})
    assert_error(status, body, 400, code="context_length_exceeded")


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/completions"),
        ("POST", "/tokenize"),
        ("POST", "/detokenize"),
        ("GET", "/metrics"),
        ("GET", "/nowhere"),
    ],
)
@pytest.mark.parametrize("key", [None, "wrong-key", KEY[:-1], KEY + "4"])
def test_every_route_but_health_needs_the_key(server, method, path, key):
    status, headers, body = server.request(method, path, {} if method == "POST" else None, key=key)
    assert_error(status, body, 401, code="invalid_api_key")
    assert headers.get("www-authenticate") == "Bearer"


def test_health_needs_no_key_and_x_api_key_works(server):
    assert server.request("GET", "/health", key=None)[:1] == (200,)
    status, _, body = server.request("GET", "/v1/models", key=None, headers={"X-Api-Key": KEY})
    assert status == 200 and body["data"][0]["id"] == NAME


def test_unknown_route_and_bad_json_in_openai_shape(server):
    status, _, body = server.request("GET", "/v1/engines")
    assert_error(status, body, 404)
    status, _, body = server.request("POST", "/v1/completions", b"{not json")
    assert_error(status, body, 400)
    status, _, body = server.request("POST", "/v1/completions", b"[1, 2]")
    assert_error(status, body, 400)
    status, _, body = server.request("GET", "/v1/completions")
    assert_error(status, body, 405)


# -- the other routes --------------------------------------------------------------------------------------------


def test_models_lists_the_served_name_and_context(client, server):
    models = client.models.list()
    assert [m.id for m in models.data] == [NAME]
    assert server.request("GET", "/v1/models")[2]["data"][0]["max_model_len"] == 256


def test_tokenize_and_detokenize_round_trip(server, lm):
    text = "Hello world! Café"
    status, _, body = server.request("POST", "/tokenize", {"prompt": text})
    assert status == 200 and body["tokens"] == lm.tokenizer.encode(text) and body["count"] == len(body["tokens"])
    status, _, plain = server.request("POST", "/tokenize", {"content": text, "add_special_tokens": False})
    assert plain["tokens"] == lm.tokenizer.encode(text, add_special_tokens=False)
    status, _, back = server.request("POST", "/detokenize", {"tokens": plain["tokens"]})
    assert status == 200 and back["prompt"] == text == back["content"]
    status, _, chat = server.request("POST", "/tokenize", {"messages": MESSAGES[0]})
    assert chat["tokens"] == lm.encode_prompt(MESSAGES[0])
    assert_error(*server.request("POST", "/detokenize", {"tokens": [999999]})[::2], 400, param="tokens")


def test_metrics_count_requests_tokens_and_latency(server, client):
    before = server.metric("memgpt_generation_tokens_total")
    client.completions.create(model=NAME, prompt="hello", max_tokens=5, temperature=0, extra_body={"min_tokens": 5})
    status, headers, text = server.request("GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert server.metric("memgpt_generation_tokens_total") == before + 5
    for name in (
        "memgpt_requests_running",
        "memgpt_requests_waiting",
        "memgpt_time_to_first_token_seconds_count",
        "memgpt_request_duration_seconds_bucket",
        "memgpt_time_per_output_token_seconds_sum",
    ):
        assert f"\n{name}" in text
    assert server.metric("memgpt_requests_running") == 0
