"""The timed workloads, written once against the engine interface (engines/__init__.py).

Every workload gets the same token ids for every engine (tokenization happens before, in the suite). A workload
is a small dataclass (`Workload`) with two methods: `once` runs it one time and returns a raw measurement (plain
JSON), `summarize` turns the timed measurements into the figures of the report. Who runs them, how often and in which order is interleave.py's job:
`warmup` untimed runs, then `repeats` timed ones, the engines taking turns. What is timed:
(a) prefill: `generate` of 1 new token on the long prompt: time to first token;
(b) greedy: 128 new tokens on the chat prompt: wall time, time to first token, and decode tokens/s over the
    steps after the first token ((n - 1) / (last token time - first token time));
(c) beam: 4 beams, 64 new tokens: wall time;  (d) batch: 8 prompts, greedy, 64 new each: new tokens/s;
(e) steps: one greedy generation of 512 new tokens, the latency of every step (run once, after the others).
Quality (perplexity and greedy continuations) lives here too; it is not timed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np


class Workload:
    """A timed workload: `once` runs it one time on an engine and returns a raw measurement (plain JSON),
    `summarize` turns the kept measurements into the report's figures. Its fields name the keys of the inputs
    and settings it reads."""

    needs: ClassVar[str | None] = None  # the engine attribute that must be true ("beam_search", "batching")
    repeated: ClassVar[bool] = True  # False: one run, no warmup

    def once(self, engine, inputs: dict, settings: dict) -> Any:
        raise NotImplementedError

    def summarize(self, runs: list, inputs: dict, settings: dict) -> dict:
        raise NotImplementedError

    def refusal(self, engine) -> dict | None:
        """The "n/a" result of an engine that cannot run this workload, or None."""
        if self.needs and not getattr(engine, self.needs):
            what = {"beam_search": "beam search", "batching": "batched generation"}[self.needs]
            return {"status": "n/a", "reason": f"no {what} in this engine"}
        return None


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


def timed_generate(engine, rows: list[list[int]], new_tokens: int, beams: int = 1) -> float:
    """Wall seconds of one `generate`, checked to give exactly `new_tokens` ids per row."""
    start = time.perf_counter()
    out = engine.generate(rows, new_tokens, beams=beams)
    seconds = time.perf_counter() - start
    if [len(r) for r in out] != [new_tokens] * len(rows):
        raise RuntimeError(f"generate gave {[len(r) for r in out]} new tokens, expected {new_tokens} per row")
    return seconds


def greedy_figures(runs: list, n: int) -> dict:
    """The figures of repeated greedy generations of `n` tokens (timed_greedy's results): wall time, time to
    first token and decode tokens/s."""
    return {
        "new_tokens": n,
        "seconds": stats([wall for wall, _, _ in runs]),
        "first_token_seconds": stats([stamps[0] for _, stamps, _ in runs]),
        "decode_tokens_per_second": stats([(n - 1) / (stamps[-1] - stamps[0]) for _, stamps, _ in runs]),
        "tokens": runs[0][2],
    }


def batch_figures(seconds: list[float], rows: int, n: int) -> dict:
    """The figures of repeated batched generations of `n` tokens per row: wall time and new tokens/s."""
    return {
        "rows": rows,
        "new_tokens": n,
        "seconds": stats(seconds),
        "tokens_per_second": stats([rows * n / x for x in seconds]),
    }


@dataclass(frozen=True)
class Prefill(Workload):
    """`generate` of 1 new token on inputs[prompt]: time to first token."""

    prompt: str

    def once(self, engine, inputs: dict, settings: dict) -> float:
        return timed_generate(engine, [inputs[self.prompt]], 1)

    def summarize(self, runs: list, inputs: dict, settings: dict) -> dict:
        return {"prompt_tokens": len(inputs[self.prompt]), "seconds": stats(runs)}


@dataclass(frozen=True)
class Greedy(Workload):
    """Greedy generation of settings[new] tokens from inputs[prompt]; `label` names its prompt-length figure."""

    prompt: str
    new: str
    label: str

    def once(self, engine, inputs: dict, settings: dict) -> tuple[float, list[float], list[int]]:
        return timed_greedy(engine, inputs[self.prompt], settings[self.new])

    def summarize(self, runs: list, inputs: dict, settings: dict) -> dict:
        return {self.label: len(inputs[self.prompt]), **greedy_figures(runs, settings[self.new])}


@dataclass(frozen=True)
class Beam(Workload):
    """Beam search (settings["beams"] beams) of settings[new] tokens from inputs[prompt]: wall time."""

    prompt: str
    new: str
    needs: ClassVar[str | None] = "beam_search"

    def once(self, engine, inputs: dict, settings: dict) -> float:
        return timed_generate(engine, [inputs[self.prompt]], settings[self.new], beams=settings["beams"])

    def summarize(self, runs: list, inputs: dict, settings: dict) -> dict:
        return {"beams": settings["beams"], "new_tokens": settings[self.new], "seconds": stats(runs)}


@dataclass(frozen=True)
class Batch(Workload):
    """Batched greedy generation of settings[new] tokens per row of inputs[rows]; `lengths` names a figure listing
    the rows' lengths (None: no such figure)."""

    rows: str
    new: str
    lengths: str | None = None
    needs: ClassVar[str | None] = "batching"

    def once(self, engine, inputs: dict, settings: dict) -> float:
        return timed_generate(engine, inputs[self.rows], settings[self.new])

    def summarize(self, runs: list, inputs: dict, settings: dict) -> dict:
        listed = {self.lengths: [len(r) for r in inputs[self.rows]]} if self.lengths else {}
        return {**listed, **batch_figures(runs, len(inputs[self.rows]), settings[self.new])}


@dataclass(frozen=True)
class Steps(Workload):
    """One greedy generation of settings[new] tokens from inputs[prompt]: the latency of every step."""

    prompt: str
    new: str
    repeated: ClassVar[bool] = False

    def once(self, engine, inputs: dict, settings: dict) -> tuple[float, list[float], list[int]]:
        return timed_greedy(engine, inputs[self.prompt], settings[self.new])

    def summarize(self, runs: list, inputs: dict, settings: dict) -> dict:
        wall, stamps, _ = runs[0]
        latencies = np.diff([0.0, *stamps]) * 1000  # (new,) ms; the first is the prefill
        return {
            "prompt_tokens": len(inputs[self.prompt]),
            "seconds": wall,
            "latency_ms": [round(x, 3) for x in latencies],
        }


SPEED: dict[str, Workload] = {
    "prefill": Prefill("prefill"),
    "greedy": Greedy("chat", "decode_new", "prompt_tokens"),
    "beam": Beam("chat", "beam_new"),
    "batch": Batch("batch", "batch_new"),
    "steps": Steps("chat", "steps_new"),
}


def quality(engine, inputs: dict, s: dict) -> dict:
    """Perplexity on the fixed text, and the greedy continuations compared later with PyTorch's."""
    nll = engine.nll(inputs["text"])
    continuations = [engine.generate([p], s["agreement_new"])[0] for p in inputs["agreement"]]
    return {
        "perplexity": float(np.exp(nll.mean())),
        "scored_tokens": len(nll),
        "continuations": continuations,
    }
