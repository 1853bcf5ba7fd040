"""The served workload: C concurrent clients through the engine, next to the same prompts one after another and
as one static batch; the chat-turn time to first token with and without prefix reuse; a soak run.

`python -m benchmarks.served DIR [DIR ...] [--rounds 3] [--soak SECONDS] [--out FOLDER]` for export folders
(e.g. the int8 and int4 exports of the default model). Every request is a chat prompt answered greedily with
exactly `--new-tokens` tokens (EOS banned until then), so every mode produces the same tokens. Modes run round by
round in alternating order, so the machine's drift hits them alike; figures are medians over the rounds, and
ratios are taken within a round. What is timed: from the first submit to the last token (aggregate tokens/s),
submit to first token (TTFT), and the gaps between a request's tokens (inter-token latency, ITL).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

import memgpt_runtime as mr
from memgpt_runtime.engine import Engine
from memgpt_runtime.request import Step

from .clients import percentile, run_clients
from .prompts import AGREEMENT_PROMPTS, BATCH_PROMPTS, CHAT_PROMPT

CLIENTS = (1, 4, 8, 16)
CHAT_TURNS = [
    "Tell me about lighthouses.",
    "Who keeps them running?",
    "What does a keeper do at night?",
    "Was it a lonely job?",
    "Write a two-line poem about one.",
]


@dataclass
class Served:
    """One run of C clients: aggregate throughput and per-request latencies."""

    clients: int
    requests: int
    tokens: int
    seconds: float
    ttft: list[float] = field(default_factory=list)
    itl: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds


def chat_prompts(lm) -> list[list[int]]:
    texts = [CHAT_PROMPT, *BATCH_PROMPTS, *AGREEMENT_PROMPTS]
    return [lm.encode_prompt(t, chat=True) for t in texts]


def options(new_tokens: int) -> dict:
    return dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens)


def serve(engine: Engine, prompts: list[list[int]], clients: int, requests: int, new_tokens: int) -> Served:
    """`clients` threads, each submitting its next request when the last is answered, `requests` in all."""
    run = Served(clients, requests, 0, 0.0)
    lock = threading.Lock()
    next_index = [0]

    def client() -> None:
        while True:
            with lock:
                i = next_index[0]
                next_index[0] += 1
            if i >= requests:
                return
            submitted = time.perf_counter()
            stamps = []
            try:
                for event in engine.submit(prompts[i % len(prompts)], **options(new_tokens)):
                    if isinstance(event, Step):
                        stamps.append(time.perf_counter())
            except mr.MemgptError:
                with lock:
                    run.errors += 1
                continue
            with lock:
                run.tokens += len(stamps)
                run.ttft.append(stamps[0] - submitted)
                run.itl.extend(np.diff(stamps).tolist())

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run.seconds = time.perf_counter() - start
    return run


def one_after_another(lm, prompts: list[list[int]], new_tokens: int) -> float:
    """tokens/s of `lm.generate` on each prompt in turn, in this thread (no engine)."""
    start = time.perf_counter()
    for p in prompts:
        lm.generate([p], **options(new_tokens))
    return len(prompts) * new_tokens / (time.perf_counter() - start)


def static_batch(lm, prompts: list[list[int]], new_tokens: int) -> float:
    """tokens/s of one padded `lm.generate` over all the prompts (the suite's batch workload)."""
    start = time.perf_counter()
    lm.generate(prompts, **options(new_tokens))
    return len(prompts) * new_tokens / (time.perf_counter() - start)


def chat_ttft(lm, reuse: bool, new_tokens: int) -> list[float]:
    """Time to first token of each turn of a five-turn chat, the history re-rendered by the template each turn.

    A new engine each time: its prefix store starts empty, so turn 1 computes its whole prompt either way.
    """
    with Engine(lm, slots=2) as engine:
        return _chat_turns(lm, engine, reuse, new_tokens)


def _chat_turns(lm, engine: Engine, reuse: bool, new_tokens: int) -> list[float]:
    history, ttfts = [], []
    for message in CHAT_TURNS:
        history.append({"role": "user", "content": message})
        ids = lm.encode_prompt(history)
        submitted = time.perf_counter()
        handle = engine.submit(ids, reuse_prefix=reuse, **options(new_tokens))
        events = iter(handle)
        next(events)
        ttfts.append(time.perf_counter() - submitted)
        result = handle.result()
        history.append({"role": "assistant", "content": lm.tokenizer.decode(result.sequences[0, len(ids) :], True)})
    return ttfts


def soak(engine: Engine, prompts: list[list[int]], clients: int, seconds: float, new_tokens: int) -> dict:
    """`clients` streaming clients for `seconds`, one in ten cancelling mid-answer; RSS sampled every 5 s."""
    import psutil

    process, stop = psutil.Process(), time.monotonic() + seconds
    counts = {"finished": 0, "cancelled": 0, "errors": 0}
    lock = threading.Lock()

    def client(k: int) -> None:
        rng = np.random.default_rng(k)
        while time.monotonic() < stop:
            handle = engine.submit(prompts[int(rng.integers(len(prompts)))], **options(new_tokens))
            leave_after = int(rng.integers(1, new_tokens)) if rng.random() < 0.1 else None
            try:
                for n, _ in enumerate(handle):
                    if leave_after is not None and n >= leave_after:
                        handle.cancel()
                        break
                key = "cancelled" if leave_after is not None else "finished"
            except mr.MemgptError:
                key = "errors"
            with lock:
                counts[key] += 1

    rss_mb = run_clients(client, clients, process)
    return {**counts, "rss_mb": rss_mb, "running_after": engine.stats()["running"]}


def measure(folder: Path, rounds: int, new_tokens: int, threads: int, prefill_chunk: int) -> dict:
    lm = mr.load(folder, threads=threads)
    lm.session.prefill_chunk = prefill_chunk
    prompts = chat_prompts(lm)
    figures: dict[str, list] = {"sequential": [], "static_batch_8": [], "chat_ttft_reuse": [], "chat_ttft_fresh": []}
    served: dict[int, list[Served]] = {c: [] for c in CLIENTS}
    with Engine(lm, slots=16) as engine:
        serve(engine, prompts, 2, 2, 8)  # warm-up
        for r in range(rounds):
            order = [
                ("sequential", None),
                ("static", None),
                *(("served", c) for c in CLIENTS),
                ("chat", True),
                ("chat", False),
            ]
            for kind, arg in order if r % 2 == 0 else reversed(order):
                if kind == "sequential":
                    figures["sequential"].append(one_after_another(lm, prompts[:8], new_tokens))
                elif kind == "static":
                    figures["static_batch_8"].append(static_batch(lm, prompts[:8], new_tokens))
                elif kind == "served":
                    served[arg].append(serve(engine, prompts, arg, max(16, 2 * arg), new_tokens))
                else:
                    figures["chat_ttft_reuse" if arg else "chat_ttft_fresh"].append(chat_ttft(lm, arg, new_tokens))
    one = [s.tokens_per_second for s in served[1]]
    report = {
        "folder": str(folder),
        "prefill_chunk": prefill_chunk,
        "sequential_tokens_per_s": float(np.median(figures["sequential"])),
        "static_batch_8_tokens_per_s": float(np.median(figures["static_batch_8"])),
        "served": {},
    }
    for c, runs in served.items():
        rates = [s.tokens_per_second for s in runs]
        report["served"][c] = {
            "tokens_per_s": float(np.median(rates)),
            "vs_one_client": float(np.median(np.array(rates) / np.array(one))),
            "vs_sequential": float(np.median(np.array(rates) / np.array(figures["sequential"]))),
            "vs_static_batch_8": float(np.median(np.array(rates) / np.array(figures["static_batch_8"]))),
            "ttft_p50": percentile([x for s in runs for x in s.ttft], 50),
            "ttft_p95": percentile([x for s in runs for x in s.ttft], 95),
            "itl_p50": percentile([x for s in runs for x in s.itl], 50),
            "itl_p95": percentile([x for s in runs for x in s.itl], 95),
            "errors": sum(s.errors for s in runs),
        }
    for key in ("chat_ttft_reuse", "chat_ttft_fresh"):
        turns = np.median(np.array(figures[key]), axis=0)
        report[key] = [round(float(t), 4) for t in turns]
        report[key + "_turn5_vs_turn1"] = float(turns[-1] / turns[0])
    return report


def markdown(report: dict) -> str:
    lines = [
        f"### {report['folder']} (prompt chunks of {report['prefill_chunk']})",
        "",
        f"one after another (lm.generate): {report['sequential_tokens_per_s']:.1f} tok/s; "
        f"static batch of 8: {report['static_batch_8_tokens_per_s']:.1f} tok/s",
        "",
        "| clients | tok/s | vs 1 client | vs static batch 8 | TTFT p50 / p95 (s) | ITL p50 / p95 (ms) | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for c, s in report["served"].items():
        lines.append(
            f"| {c} | {s['tokens_per_s']:.1f} | {s['vs_one_client']:.2f}x | {s['vs_static_batch_8']:.2f}x | "
            f"{s['ttft_p50']:.3f} / {s['ttft_p95']:.3f} | {1000 * s['itl_p50']:.1f} / {1000 * s['itl_p95']:.1f} | {s['errors']} |"
        )
    for key, name in (("chat_ttft_reuse", "with prefix reuse"), ("chat_ttft_fresh", "without")):
        turns = ", ".join(f"{t:.3f}" for t in report[key])
        lines.append(
            f"\nchat TTFT per turn {name} (s): {turns}; turn 5 / turn 1 = {report[key + '_turn5_vs_turn1']:.2f}"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.served", description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, metavar="DIR", help="export folders to serve")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every mode (default 3)")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens per answer (default 64)")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads (default 2)")
    parser.add_argument("--prefill-chunk", type=int, default=256, help="prompt chunk size (default 256)")
    parser.add_argument(
        "--soak", type=float, default=0, help="then 16 clients for this many seconds (default: no soak)"
    )
    parser.add_argument("--only-chat", action="store_true", help="only the chat-turn time to first token")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results") / time.strftime("served-%Y%m%d-%H%M%S"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    reports = []
    for folder in args.folders:
        if args.only_chat:
            lm = mr.load(folder, threads=args.threads)
            runs = {True: [], False: []}
            for r in range(args.rounds):  # interleaved, the order reversed every round
                for reuse in (True, False) if r % 2 == 0 else (False, True):
                    runs[reuse].append(chat_ttft(lm, reuse, args.new_tokens))
            for reuse, values in runs.items():
                turns = np.median(values, axis=0)
                print(
                    f"{folder} chat TTFT per turn {'with' if reuse else 'without'} prefix reuse (s): "
                    f"{', '.join(f'{t:.3f}' for t in turns)}; turn 5 / turn 1 = {turns[-1] / turns[0]:.2f}",
                    flush=True,
                )
            continue
        report = measure(folder, args.rounds, args.new_tokens, args.threads, args.prefill_chunk)
        if args.soak:
            lm = mr.load(folder, threads=args.threads)
            with Engine(lm, slots=16) as engine:
                report["soak"] = soak(engine, chat_prompts(lm), 16, args.soak, args.new_tokens)
        reports.append(report)
        print(markdown(report) + (f"soak: {json.dumps(report['soak'])}\n" if args.soak else ""), flush=True)
    (args.out / "served.json").write_text(json.dumps(reports, indent=2, default=lambda o: asdict(o)))
    (args.out / "served.md").write_text("\n".join(markdown(r) for r in reports))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
