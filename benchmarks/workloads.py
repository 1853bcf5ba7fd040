"""The timed workloads, written once against the engine interface (engines/__init__.py).

Every workload gets the same token ids for every engine (tokenization happens before, in the suite), runs
`warmup` untimed times, then `repeats` timed times with `time.perf_counter`. What is timed:
(a) prefill: `generate` of 1 new token on the long prompt: time to first token;
(b) greedy: 128 new tokens on the chat prompt: wall time, time to first token, and decode tokens/s over the
    steps after the first token ((n - 1) / (last token time - first token time));
(c) beam: 4 beams, 64 new tokens: wall time;  (d) batch: 8 prompts, greedy, 64 new each: new tokens/s;
(e) steps: one greedy generation of 512 new tokens, the latency of every step (run once, after the others).
Quality (perplexity and greedy continuations) lives here too; it is not timed.
"""

from __future__ import annotations

import time

import numpy as np


def stats(values: list[float]) -> dict:
    return {"median": float(np.median(values)), "min": float(min(values)), "max": float(max(values)), "values": values}


def timed_greedy(engine, prompt: list[int], new_tokens: int) -> tuple[float, list[float], list[int]]:
    """(wall seconds, the time each new token was chosen relative to the start, the new ids)."""
    stamps: list[float] = []
    start = time.perf_counter()
    out = engine.generate([prompt], new_tokens, on_token=lambda: stamps.append(time.perf_counter()))
    wall = time.perf_counter() - start
    if len(stamps) != new_tokens or len(out[0]) != new_tokens:
        raise RuntimeError(f"asked for {new_tokens} new tokens, got {len(out[0])} ({len(stamps)} callbacks)")
    return wall, [s - start for s in stamps], out[0]


def repeat(run, warmup: int, repeats: int) -> list:
    for _ in range(warmup):
        run()
    return [run() for _ in range(repeats)]


def prefill(engine, inputs: dict, s: dict) -> dict:
    def run() -> float:
        start = time.perf_counter()
        engine.generate([inputs["prefill"]], 1)
        return time.perf_counter() - start

    return {"prompt_tokens": len(inputs["prefill"]), "seconds": stats(repeat(run, s["warmup"], s["repeats"]))}


def greedy(engine, inputs: dict, s: dict) -> dict:
    return {"prompt_tokens": len(inputs["chat"]), **greedy_figures(engine, inputs["chat"], s["decode_new"], s)}


def greedy_figures(engine, prompt: list[int], n: int, s: dict) -> dict:
    """Greedy generation of `n` tokens, repeated: wall time, time to first token and decode tokens/s."""
    runs = repeat(lambda: timed_greedy(engine, prompt, n), s["warmup"], s["repeats"])
    return {
        "new_tokens": n,
        "seconds": stats([wall for wall, _, _ in runs]),
        "first_token_seconds": stats([stamps[0] for _, stamps, _ in runs]),
        "decode_tokens_per_second": stats([(n - 1) / (stamps[-1] - stamps[0]) for _, stamps, _ in runs]),
        "tokens": runs[0][2],
    }


def beam(engine, inputs: dict, s: dict) -> dict:
    if not engine.beam_search:
        return {"status": "n/a", "reason": "no beam search in this engine"}

    def run() -> float:
        start = time.perf_counter()
        out = engine.generate([inputs["chat"]], s["beam_new"], beams=s["beams"])
        if len(out[0]) != s["beam_new"]:
            raise RuntimeError(f"beam search gave {len(out[0])} new tokens, expected {s['beam_new']}")
        return time.perf_counter() - start

    return {"beams": s["beams"], "new_tokens": s["beam_new"], "seconds": stats(repeat(run, s["warmup"], s["repeats"]))}


def batch(engine, inputs: dict, s: dict) -> dict:
    if not engine.batching:
        return {"status": "n/a", "reason": "no batched generation in this engine"}
    return batch_figures(engine, inputs["batch"], s["batch_new"], s)


def batch_figures(engine, rows: list[list[int]], n: int, s: dict) -> dict:
    """Batched greedy generation of `n` tokens per row, repeated: wall time and new tokens/s."""

    def run() -> float:
        start = time.perf_counter()
        out = engine.generate(rows, n)
        seconds = time.perf_counter() - start
        if [len(r) for r in out] != [n] * len(rows):
            raise RuntimeError(f"batch gave {[len(r) for r in out]} new tokens, expected {n} per row")
        return seconds

    seconds = repeat(run, s["warmup"], s["repeats"])
    return {
        "rows": len(rows),
        "new_tokens": n,
        "seconds": stats(seconds),
        "tokens_per_second": stats([len(rows) * n / x for x in seconds]),
    }


def steps(engine, inputs: dict, s: dict) -> dict:
    wall, stamps, _ = timed_greedy(engine, inputs["chat"], s["steps_new"])
    latencies = np.diff([0.0, *stamps]) * 1000  # (new,) ms; the first is the prefill
    return {"prompt_tokens": len(inputs["chat"]), "seconds": wall, "latency_ms": [round(x, 3) for x in latencies]}


SPEED = {"prefill": prefill, "greedy": greedy, "beam": beam, "batch": batch, "steps": steps}


def quality(engine, inputs: dict, s: dict) -> dict:
    """Perplexity on the fixed text, and the greedy continuations compared later with PyTorch's."""
    nll = engine.nll(inputs["text"])
    continuations = [engine.generate([p], s["agreement_new"])[0] for p in inputs["agreement"]]
    return {
        "perplexity": float(np.exp(nll.mean())),
        "scored_tokens": len(nll),
        "continuations": continuations,
    }
