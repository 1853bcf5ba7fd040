"""`memgpt serve` under pressure, on a real process with one slot and a queue of one: a full queue answers 503
with Retry-After, a body over the limit 413 (announced or streamed), and SIGTERM lets the running request finish,
refuses new connections, and exits 0. Also the bare app before its model is loaded (/health 503), and the CLI's
one-line errors."""

from __future__ import annotations

import asyncio
import http.client
import json
import signal
import subprocess
import sys
import threading
import time

import pytest

from server_process import ServerProcess, assert_error, assert_refused_when_full, wait_until

MAX_BODY = 4000


@pytest.fixture(scope="module")
def server(tiny_llama_export, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve-limits") / "server.log"
    proc = ServerProcess(
        tiny_llama_export,
        "--max-batch",
        "1",
        "--max-queue",
        "1",
        "--max-body-bytes",
        str(MAX_BODY),
        "--drain-timeout",
        "60",
        log=log,
    )
    try:
        proc.wait_healthy()
        yield proc
    finally:
        proc.stop()


def long_stream(server, tokens: int = 240, n: int = 1):
    """A streaming completion in a thread; returns (thread, result dict with the chunks as they arrive)."""
    out = {"chunks": [], "error": None}

    def run():
        try:
            stream = server.client().completions.create(
                model=server_model(server),
                prompt="Once upon a time",
                max_tokens=tokens,
                temperature=0,
                stream=True,
                n=n,
                extra_body={"min_tokens": tokens},
            )
            for chunk in stream:
                out["chunks"].append(chunk)
        except Exception as exc:  # the test reads it
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def server_model(server) -> str:
    return server.request("GET", "/v1/models")[2]["data"][0]["id"]


def test_a_full_queue_answers_503_with_retry_after(server):
    """Twelve requests at once on one slot and a queue of one: one runs, one waits, the others are refused with
    503 and Retry-After (at once, not after waiting); the ones taken are answered in full."""
    body = {"prompt": "Once upon a time", "max_tokens": 200, "temperature": 0, "min_tokens": 200}
    assert_refused_when_full(server.requests_at_once("/v1/completions", body, 12), tokens=200)
    assert server.metric("memgpt_requests_running") == 0 and server.metric("memgpt_requests_waiting") == 0


def test_a_request_wider_than_the_slots_is_a_400(server):
    status, _, body = server.request(
        "POST", "/v1/completions", {"prompt": "hi", "max_tokens": 4, "n": 2, "temperature": 1}
    )
    assert_error(status, body, 400, param="n")
    status, _, body = server.request(
        "POST", "/v1/completions", {"prompt": "hi", "max_tokens": 4, "n": 2, "temperature": 0}
    )
    assert status == 200 and [c["text"] for c in body["choices"]][0] == body["choices"][1]["text"]  # greedy: one row


def test_a_body_over_the_limit_is_413_announced_or_streamed(server):
    big = {"prompt": "x " * MAX_BODY, "max_tokens": 1}
    status, _, body = server.request("POST", "/v1/completions", big)
    assert_error(status, body, 413)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    data = json.dumps(big).encode()
    conn.request(
        "POST",
        "/v1/completions",
        body=iter([data[i : i + 1000] for i in range(0, len(data), 1000)]),
        headers={"Content-Type": "application/json"},
        encode_chunked=True,
    )
    response = conn.getresponse()
    assert_error(response.status, json.loads(response.read()), 413)
    conn.close()
    assert (
        server.request("POST", "/v1/completions", {"prompt": "x", "max_tokens": 1})[0] == 200
    )  # small bodies still pass


def test_health_is_503_until_the_model_is_loaded(tiny_llama_export):
    """The app itself (no process): while its model loads, /health and the API answer 503 in OpenAI's shape."""
    from memgpt_runtime.server.app import ServerState, create_app

    state = ServerState(tiny_llama_export, "m", [], 2, 2, 1, 1 << 20)
    gate = threading.Event()
    real_load = state.load
    state.load = lambda: (gate.wait(30), real_load())
    app = create_app(state)

    async def call(path):
        sent = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        scope = {
            "type": "http",
            "method": "GET",
            "path": path,
            "headers": [],
            "query_string": b"",
            "root_path": "",
            "scheme": "http",
            "server": ("127.0.0.1", 1),
            "client": ("127.0.0.1", 2),
            "http_version": "1.1",
        }
        await app(scope, receive, send)
        start = next(m for m in sent if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return start["status"], dict((k.decode(), v.decode()) for k, v in start["headers"]), json.loads(body)

    async def scenario():
        lifespan = asyncio.Queue()
        await lifespan.put({"type": "lifespan.startup"})
        replies = []

        async def send(message):
            replies.append(message)

        task = asyncio.ensure_future(app({"type": "lifespan"}, lifespan.get, send))
        while not replies:
            await asyncio.sleep(0.01)
        loading = [await call("/health"), await call("/v1/models")]
        gate.set()
        for _ in range(600):
            if state.lm is not None:
                break
            await asyncio.sleep(0.05)
        ready = await call("/health")
        await lifespan.put({"type": "lifespan.shutdown"})
        await task
        return loading, ready

    loading, ready = asyncio.run(scenario())
    for status, headers, body in loading:
        assert_error(status, body, 503, code="loading")
        assert headers["retry-after"] == "1"
    assert ready[0] == 200 and ready[2] == {"status": "ok"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["/nonexistent/folder"], "error: "),
        (["DIR", "--port", "99999"], "port"),
        (["DIR", "--max-batch", "0"], "whole number"),
    ],
)
def test_cli_errors_are_one_line(tiny_llama_export, args, message):
    args = [str(tiny_llama_export) if a == "DIR" else a for a in args]
    run = subprocess.run(
        [sys.executable, "-m", "memgpt_runtime.cli", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tiny_llama_export.parent,
    )
    assert run.returncode != 0 and message in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr


def test_sigterm_drains_the_running_request_and_exits_0(server):
    """Last in this module: it stops the module's server."""
    running, out = long_stream(server, tokens=200)
    assert wait_until(lambda: len(out["chunks"]) > 0)
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    assert wait_until(lambda: _refused(server), timeout=10), "new connections are refused while draining"
    running.join(timeout=120)
    assert out["error"] is None
    assert out["chunks"][-1].choices[0].finish_reason == "length"
    assert sum(1 for c in out["chunks"] if c.choices[0].text) >= 190  # the whole answer came through
    assert server.process.wait(timeout=60) == 0
    assert time.monotonic() - started < 60


def _refused(server) -> bool:
    try:
        server.request("GET", "/health", timeout=2)
    except OSError:
        return True
    return False
