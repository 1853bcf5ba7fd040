"""The real `memgpt serve` process on a free port of 127.0.0.1, for the server's tests (as llama.cpp's
`tools/server/tests/utils.py` `ServerProcess` and vLLM's `RemoteOpenAIServer`): start, wait for /health, talk to
it with `http.client` or the real `openai` client (`max_retries=0`), stop it with SIGTERM. Every wait is bounded.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

KEY = "test-key-123"  # the API key of the tiny model's server (conftest's `server`)
NAME = "tiny"  # the model name it serves under
MESSAGES = [  # chats every server test can send
    [{"role": "user", "content": "Hello world! How are you today?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Once upon a time"}],
    [{"role": "user", "content": "Numbers: 0 1 2 3"}],
]
START_TIMEOUT = 90.0  # seconds for the process to answer /health with 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, folder: Path, *args: str, api_key: str | None = None, log: Path | None = None):
        self.port = free_port()
        self.api_key = api_key
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable,
            "-m",
            "memgpt_runtime.cli",
            "serve",
            str(folder),
            "--port",
            str(self.port),
            "--log-level",
            "warning",
            *args,
        ]
        if api_key:
            command += ["--api-key", api_key]
        self.log = log
        self._out = open(log, "wb") if log else subprocess.DEVNULL
        # subtle: run outside the source tree, where a stale `memgpt_runtime.egg-info` could hide the entry points
        self.process = subprocess.Popen(command, stdout=self._out, stderr=subprocess.STDOUT, cwd=Path(folder).parent)

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> list[int]:
        """Poll /health until 200; returns every status seen (503 while loading). Raises if the process dies."""
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}: {self.output()}")
            try:
                status, _, _ = self.request("GET", "/health", timeout=2)
                seen.append(status)
                if status == 200:
                    return seen
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"the server did not become healthy within {timeout} s: {self.output()}")

    def request(
        self,
        method: str,
        path: str,
        body=None,
        headers: dict | None = None,
        key: str | None = "default",
        timeout: float = 60,
    ) -> tuple[int, dict, object]:
        """(status, headers, decoded JSON or text) of one request; `key` None sends no key."""
        key = self.api_key if key == "default" else key
        head = dict(headers or {})
        if key:
            head["Authorization"] = f"Bearer {key}"
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        if data is not None:
            head.setdefault("Content-Type", "application/json")
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=data, headers=head)
            response = conn.getresponse()
            raw = response.read()
            headers = {k.lower(): v for k, v in response.getheaders()}
        finally:
            conn.close()
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = raw.decode("utf-8", "replace")
        return response.status, headers, payload

    def client(self, **options):
        import openai

        return openai.OpenAI(
            base_url=f"{self.url}/v1", api_key=self.api_key or "none", max_retries=0, timeout=120, **options
        )

    def metric(self, name: str, default: float | None = None) -> float:
        """The value of the sample `name` (with its labels, if any) in /metrics."""
        status, _, text = self.request("GET", "/metrics")
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        if default is not None:
            return default
        raise KeyError(name)

    def stop(self, sig=signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self._out is not subprocess.DEVNULL:
            self._out.close()
        return self.process.returncode

    def requests_at_once(self, path: str, body: dict, count: int, timeout: float = 120) -> list[tuple]:
        """`count` POSTs of `body` released together from as many threads; their (status, headers, body)."""
        answers = [None] * count
        barrier = threading.Barrier(count)

        def send(i):
            barrier.wait(timeout=30)
            answers[i] = self.request("POST", path, body, timeout=timeout)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=timeout + 30)
        return answers

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log and self.log.exists() else ""


def assert_error(status, body, expected_status, param=None, code=None):
    assert status == expected_status, body
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["message"]
    if param is not None:
        assert body["error"]["param"] == param, body
    if code is not None:
        assert body["error"]["code"] == code, body


def assert_refused_when_full(answers: list[tuple], tokens: int) -> None:
    """A burst on one slot and a queue of one: at least two taken and answered in full (`tokens` each), the others
    refused at once with OpenAI's 503 and Retry-After."""
    refused = [a for a in answers if a[0] == 503]
    taken = [a for a in answers if a[0] == 200]
    assert len(refused) + len(taken) == len(answers) and refused and len(taken) >= 2, [a[0] for a in answers]
    for status, headers, body in refused:
        assert_error(status, body, 503, code="queue_full")
        assert int(headers["retry-after"]) >= 1
    assert all(body["usage"]["completion_tokens"] == tokens for _, _, body in taken)


def wait_until(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False
