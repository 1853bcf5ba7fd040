"""The served workload through HTTP: C concurrent `openai` clients against `memgpt serve`, next to llama.cpp's
`llama-server` on the same model, and `lm.generate` in-process as the baseline of the HTTP overhead; a soak run.

python -m benchmarks.served_http DIR [--llama-server BIN --gguf FILE] [--rounds 3] [--soak SECONDS] [--out FOLDER]

Every request is a chat prompt (the suite's 14 chat prompts, cycled) answered greedily with exactly `--new-tokens`
tokens (memgpt: `min_tokens`; llama-server: `ignore_eos`), streamed, with usage. A run of C clients sends
`--requests` requests, each client its next one when the last is answered. Servers and clients share the machine's
cores: what is timed is what a client sees, from the first request sent to the last token received (aggregate
tokens/s), request sent to first token (TTFT), and the whole request (latency). Both servers run with `--threads`
threads; llama-server with 8 slots (`-np 8`) and continuous batching, memgpt with `--slots` KV slots. Rounds alternate
the servers' order. memgpt's answers at every C are compared with its answers at C = 1 (greedy: they must be equal).
The soak: `--soak-clients` streaming clients for `--soak` seconds, one request in ten closed after a random number
of chunks; 5xx answers, requests left running and the server's RSS (every 5 s) are recorded.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .clients import percentile, run_clients
from .prompts import AGREEMENT_PROMPTS, BATCH_PROMPTS, CHAT_PROMPT

CLIENTS = (1, 4, 8, 16)
PROMPTS = [CHAT_PROMPT, *BATCH_PROMPTS, *AGREEMENT_PROMPTS]


@dataclass
class Run:
    server: str
    clients: int
    seconds: float = 0.0
    tokens: int = 0
    ttft: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    texts: dict[int, str] = field(default_factory=dict)  # request index -> answer
    errors: list[str] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


class Server:
    """A server process on a free port of 127.0.0.1, with the extra request fields that give exactly N tokens."""

    def __init__(self, name: str, command: list[str], port: int, exact_tokens, log: Path):
        self.name, self.port, self.exact_tokens = name, port, exact_tokens
        self.log = open(log, "wb")
        # run in the log's folder: a stale `memgpt_runtime.egg-info` in the working directory could hide entry points
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, cwd=log.parent)
        self.url = f"http://127.0.0.1:{port}/v1"

    def wait(self, timeout: float = 300) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log.name}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} did not start within {timeout} s")

    def client(self):
        import openai

        return openai.OpenAI(base_url=self.url, api_key="none", max_retries=0, timeout=600)

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            return r.read().decode()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()
        return self.process.returncode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def messages(i: int) -> list[dict]:
    return [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]


def one_request(
    client, server: Server, i: int, new_tokens: int, stream: bool = True
) -> tuple[float | None, float, int, str]:
    """(TTFT, latency, tokens, text) of request `i`."""
    sent = time.perf_counter()
    options = dict(
        model="m",
        messages=messages(i),
        max_tokens=new_tokens,
        temperature=0,
        extra_body=server.exact_tokens(new_tokens),
    )
    if not stream:
        out = client.chat.completions.create(**options)
        return None, time.perf_counter() - sent, out.usage.completion_tokens, out.choices[0].message.content
    first, parts, tokens = None, [], 0
    for chunk in client.chat.completions.create(**options, stream=True, stream_options={"include_usage": True}):
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.perf_counter()
            parts.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return (first or time.perf_counter()) - sent, time.perf_counter() - sent, tokens, "".join(parts)


def serve(server: Server, clients: int, requests: int, new_tokens: int, stream: bool = True) -> Run:
    run = Run(server.name, clients)
    lock = threading.Lock()
    next_index = [0]

    def client_loop(client) -> None:
        while True:
            with lock:
                i = next_index[0]
                next_index[0] += 1
            if i >= requests:
                return
            try:
                ttft, latency, tokens, text = one_request(client, server, i, new_tokens, stream)
            except Exception as exc:  # recorded, the run goes on
                with lock:
                    run.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                run.tokens += tokens
                if ttft is not None:
                    run.ttft.append(ttft)
                run.latency.append(latency)
                run.texts[i] = text

    threads = [
        threading.Thread(target=client_loop, args=(server.client(),)) for _ in range(clients)
    ]  # clients made untimed
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run.seconds = time.perf_counter() - start
    return run


class InProcess:
    """`lm.generate` on the same chat prompts one after another, in this process (no server): the baseline of the
    HTTP overhead, measured in every round next to the servers."""

    def __init__(self, folder: Path, threads: int, requests: int, new_tokens: int):
        import memgpt_runtime as mr

        self.lm = mr.load(folder, threads=threads)
        self.prompts = [self.lm.encode_prompt(messages(i)) for i in range(requests)]
        self.new_tokens = new_tokens
        self.lm.generate([self.prompts[0]], max_new_tokens=4)  # warm-up

    def tokens_per_second(self) -> float:
        start = time.perf_counter()
        for p in self.prompts:
            self.lm.generate([p], max_new_tokens=self.new_tokens, min_new_tokens=self.new_tokens)
        return len(self.prompts) * self.new_tokens / (time.perf_counter() - start)

    def static_batch(self, rows: int = 8) -> float:
        """tokens/s of one padded `lm.generate` of `rows` prompts: what batching 8 rows gives without a server."""
        start = time.perf_counter()
        self.lm.generate(self.prompts[:rows], max_new_tokens=self.new_tokens, min_new_tokens=self.new_tokens)
        return rows * self.new_tokens / (time.perf_counter() - start)


def soak(server: Server, clients: int, seconds: float, new_tokens: int) -> dict:
    """Streaming clients for `seconds`, one request in ten closed after a random number of chunks."""
    import openai
    import psutil

    process, stop = psutil.Process(server.process.pid), time.monotonic() + seconds
    counts = {"finished": 0, "left": 0, "errors_5xx": 0, "errors_other": 0}
    lock = threading.Lock()

    def client_loop(k: int) -> None:
        rng = np.random.default_rng(k)
        client = server.client()
        while time.monotonic() < stop:
            leave_after = int(rng.integers(1, new_tokens)) if rng.random() < 0.1 else None
            key = "finished"
            try:
                stream = client.chat.completions.create(
                    model="m",
                    messages=messages(int(rng.integers(100))),
                    max_tokens=new_tokens,
                    temperature=0.8,
                    seed=int(rng.integers(1 << 30)),
                    stream=True,
                )
                for n, _ in enumerate(stream):
                    if leave_after is not None and n >= leave_after:
                        stream.close()
                        key = "left"
                        break
            except openai.APIStatusError as exc:
                key = "errors_5xx" if exc.status_code >= 500 else "errors_other"
            except Exception:
                key = "errors_other"
            with lock:
                counts[key] += 1

    mb = run_clients(client_loop, clients, process)
    time.sleep(1)
    text = server.metrics()
    running = next(float(line.split()[1]) for line in text.splitlines() if line.startswith("memgpt_requests_running "))
    return {
        **counts,
        "seconds": seconds,
        "clients": clients,
        "rss_mb": mb,
        "running_after": running,
        "rss_first_minute_mb": max(mb[:12]),
        "rss_last_minute_mb": max(mb[-12:]),
    }


def summary(runs: list[Run], baseline: float | None) -> dict:
    out = {}
    for name in dict.fromkeys(r.server for r in runs):
        per = {}
        ones = [r.tokens_per_second for r in runs if r.server == name and r.clients == 1]
        for c in sorted({r.clients for r in runs if r.server == name}):
            mine = [r for r in runs if r.server == name and r.clients == c]
            rates = [r.tokens_per_second for r in mine]
            per[c] = {
                "tokens_per_s": float(np.median(rates)),
                "all_tokens_per_s": [round(x, 1) for x in rates],
                "vs_one_client": float(np.median(np.array(rates) / np.array(ones)))
                if len(ones) == len(rates)
                else None,
                "ttft_p50": percentile([x for r in mine for x in r.ttft], 50),
                "ttft_p95": percentile([x for r in mine for x in r.ttft], 95),
                "latency_p50": percentile([x for r in mine for x in r.latency], 50),
                "latency_p95": percentile([x for r in mine for x in r.latency], 95),
                "errors": sum(len(r.errors) for r in mine),
            }
        out[name] = per
    return out


def same_as_alone(runs: list[Run], name: str) -> dict[int, str]:
    """For each C, how many of `name`'s answers equal its answer to the same request at C = 1 (same round)."""
    out = {}
    alone = [r for r in runs if r.server == name and r.clients == 1]
    for c in sorted({r.clients for r in runs if r.server == name}):
        equal = total = 0
        for r, one in zip([r for r in runs if r.server == name and r.clients == c], alone):
            for i, text in r.texts.items():
                total += 1
                equal += one.texts.get(i) == text
        out[c] = f"{equal}/{total}"
    return out


def report(result: dict) -> str:
    lines = []
    if "in_process_tokens_per_s" in result:
        lines += [
            f"in-process `lm.generate`, one prompt after another: {result['in_process_tokens_per_s']:.1f} tok/s; one static "
            f"batch of 8: {result['static_batch_8_tokens_per_s']:.1f} tok/s ({result['static_batch_8_vs_in_process']:.2f}x)",
            "",
        ]
    one = result.get("memgpt_one_client_non_streamed")
    if one:
        lines.append(
            f"memgpt, one client, not streamed: {one:.1f} tok/s ({result['overhead_ratio_non_streamed']:.2f}x in-process, "
            f"median of per-round ratios); streamed: {result.get('overhead_ratio_streamed', float('nan')):.2f}x in-process"
        )
        lines.append("")
    if result.get("summary"):
        lines += [
            "| server | clients | tok/s | vs 1 client | TTFT p50 / p95 (s) | latency p50 / p95 (s) | same as alone | errors |",
            "|---|---|---|---|---|---|---|---|",
        ]
    for name, per in result.get("summary", {}).items():
        equal = result["same_as_alone"].get(name, {})
        for c, s in per.items():
            ratio = f"{s['vs_one_client']:.2f}x" if s["vs_one_client"] else "-"
            lines.append(
                f"| {name} | {c} | {s['tokens_per_s']:.1f} | {ratio} | {s['ttft_p50']:.3f} / {s['ttft_p95']:.3f} | "
                f"{s['latency_p50']:.2f} / {s['latency_p95']:.2f} | {equal.get(c, equal.get(str(c), '-'))} | {s['errors']} |"
            )
    if "soak" in result:
        s = result["soak"]
        lines += [
            "",
            f"soak: {s['clients']} streaming clients for {s['seconds']:.0f} s: {s['finished']} finished, {s['left']} left "
            f"early, {s['errors_5xx']} 5xx, {s['errors_other']} other errors; running after: {s['running_after']:.0f}; "
            f"server RSS max first minute {s['rss_first_minute_mb']} MB, last minute {s['rss_last_minute_mb']} MB",
        ]
    return "\n".join(lines) + "\n"


def workload(args, servers: list[Server], clients: list[int], result: dict) -> list[Run]:
    """Rounds of: the in-process baseline, C clients on every server, one non-streamed client on memgpt; the soak if
    asked."""
    runs: list[Run] = []
    local = InProcess(args.folder, args.threads, args.requests, args.new_tokens)
    baseline, batch8, non_streamed, streamed = [], [], [], []
    for r in range(args.rounds):
        baseline.append(local.tokens_per_second())
        batch8.append(local.static_batch(8))
        order = servers if r % 2 == 0 else servers[::-1]
        for s in order:
            for c in clients if r % 2 == 0 else clients[::-1]:
                runs.append(serve(s, c, args.requests, args.new_tokens))
                print(f"round {r} {s.name} C={c}: {runs[-1].tokens_per_second:.1f} tok/s", file=sys.stderr, flush=True)
                if s is servers[0] and c == 1:
                    streamed.append(runs[-1].tokens_per_second)
        non_streamed.append(serve(servers[0], 1, args.requests, args.new_tokens, stream=False).tokens_per_second)
    result["in_process_tokens_per_s"] = float(np.median(baseline))
    result["in_process_all"] = [round(x, 1) for x in baseline]
    result["static_batch_8_tokens_per_s"] = float(np.median(batch8))
    result["static_batch_8_vs_in_process"] = float(np.median(np.array(batch8) / np.array(baseline)))
    result["memgpt_one_client_non_streamed"] = float(np.median(non_streamed))
    if streamed:
        result["overhead_ratio_streamed"] = float(np.median(np.array(streamed) / np.array(baseline)))
    result["overhead_ratio_non_streamed"] = float(np.median(np.array(non_streamed) / np.array(baseline)))
    result["summary"] = summary(runs, result["in_process_tokens_per_s"])
    result["same_as_alone"] = {s.name: same_as_alone(runs, s.name) for s in servers}
    if args.soak:
        result["soak"] = soak(servers[0], args.soak_clients, args.soak, args.new_tokens)
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.served_http", description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a memgpt export folder")
    parser.add_argument("--llama-server", type=Path, help="llama.cpp's llama-server binary (optional)")
    parser.add_argument("--gguf", type=Path, help="the GGUF file llama-server serves")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--slots", type=int, default=16, help="memgpt serve --max-batch")
    parser.add_argument("--clients", default=",".join(map(str, CLIENTS)))
    parser.add_argument("--soak", type=float, default=0.0, help="seconds of the soak run (0 = none)")
    parser.add_argument("--soak-clients", type=int, default=16)
    parser.add_argument("--soak-only", action="store_true", help="only the soak run (memgpt only, no workload)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / time.strftime("served-http-%Y%m%d-%H%M%S"),
    )
    args = parser.parse_args(argv)
    args.folder, args.out = args.folder.resolve(), args.out.resolve()
    args.gguf = args.gguf.resolve() if args.gguf else None
    args.out.mkdir(parents=True, exist_ok=True)
    clients = [int(c) for c in args.clients.split(",")]

    servers = []
    port = free_port()
    servers.append(
        Server(
            "memgpt",
            [
                sys.executable,
                "-m",
                "memgpt_runtime.cli",
                "serve",
                str(args.folder),
                "--port",
                str(port),
                "--threads",
                str(args.threads),
                "--max-batch",
                str(args.slots),
                "--max-queue",
                "256",
                "--model-name",
                "m",
                "--log-level",
                "warning",
            ],
            port,
            lambda n: {"min_tokens": n},
            args.out / "memgpt.log",
        )
    )
    if args.llama_server and not args.soak_only:
        port = free_port()
        servers.append(
            Server(
                "llama-server",
                [
                    str(args.llama_server),
                    "-m",
                    str(args.gguf),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "-np",
                    "8",
                    "-c",
                    "16384",
                    "-t",
                    str(args.threads),
                    "--log-disable",
                ],
                port,
                lambda n: {"ignore_eos": True},
                args.out / "llama-server.log",
            )
        )
    result: dict = {
        "folder": str(args.folder),
        "gguf": str(args.gguf) if args.gguf else None,
        "threads": args.threads,
        "requests": args.requests,
        "new_tokens": args.new_tokens,
        "rounds": args.rounds,
    }
    runs: list[Run] = []
    try:
        for s in servers:
            s.wait()
            serve(s, 2, 2, 8)  # warm-up
        if args.soak_only:
            result["soak"] = soak(servers[0], args.soak_clients, args.soak, args.new_tokens)
        else:
            runs += workload(args, servers, clients, result)
    finally:
        result["exit_codes"] = {s.name: s.stop() for s in servers}
    return _write(args, result, runs)


def _write(args, result: dict, runs: list[Run]) -> int:
    result["runs"] = [{k: v for k, v in asdict(r).items() if k != "texts"} for r in runs]
    (args.out / "served_http.json").write_text(json.dumps(result, indent=1))
    text = report(result)
    (args.out / "served_http.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
