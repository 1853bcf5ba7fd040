"""Spec: the suite's timed part keeps one worker per engine and lets the engines take turns, round by round.

The engines here are fakes (tests/fake_engine.py) that log every `generate` call, so the turn order is read back
from the log; the workers are real processes speaking the real protocol.
"""

from __future__ import annotations

import pytest

from benchmarks import interleave, workloads

SETTINGS = {
    "warmup": 1,
    "repeats": 2,
    "timeout": 60,
    "decode_new": 4,
    "beams": 2,
    "beam_new": 3,
    "batch_new": 2,
    "steps_new": 5,
}
INPUTS = {"prefill": [1, 2, 3], "chat": [1, 2], "batch": [[1], [2, 3]]}


@pytest.fixture(scope="module")
def interleaved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("interleave")
    calls = folder / "calls.txt"
    engines = {"A": {}, "B": {"beam_search": False}, "C": {"broken": "beam"}, "D": {"broken": "load"}}
    specs = {
        name: {
            "adapter": "tests.fake_engine",
            "job": "speed",
            "threads": 1,
            "inputs": INPUTS,
            "settings": SETTINGS,
            "name": name,
            "calls": str(calls),
            **extra,
        }
        for name, extra in engines.items()
    }
    results = interleave.run(
        specs, workloads.SPEED, ["greedy", "beam", "batch", "steps"], SETTINGS, folder, lambda m: None
    )
    return results, calls.read_text().split("\n")[:-1]


@pytest.mark.parametrize(
    "names, index, expected",
    [
        (["A", "B", "C"], 0, ["A", "B", "C"]),
        (["A", "B", "C"], 1, ["C", "B", "A"]),
        (["A", "B", "C"], 2, ["A", "B", "C"]),
        (["A"], 1, ["A"]),
    ],
)
def test_turns_reverse_every_round(names, index, expected):
    assert interleave.order(names, index) == expected


def test_engines_take_turns_warmup_first_and_reversing_every_round(interleaved):
    _, calls = interleaved
    greedy = calls[:9]  # 1 warmup + 2 timed rounds over A, B, C
    assert greedy == ["A 1", "B 1", "C 1", "C 1", "B 1", "A 1", "A 1", "B 1", "C 1"]


def test_a_refusal_is_na_and_a_crash_fails_only_that_engine(interleaved):
    results, calls = interleaved
    # beam: B refuses without generating; C crashes on its first turn and leaves the rotation
    assert calls[9:13] == ["A 2", "C 2", "A 2", "A 2"]
    assert results["B"]["workloads"]["beam"] == {"status": "n/a", "reason": "no beam search in this engine"}
    assert results["C"] == {"status": "failed", "error": "beam: RuntimeError: beam search is broken here"}
    assert results["D"] == {"status": "failed", "error": "RuntimeError: this fake engine does not load"}
    # batch (3 rounds) and steps (one run) go on with A and B
    assert calls[13:] == ["A 1", "B 1", "B 1", "A 1", "A 1", "B 1", "A 1", "B 1"]


def test_only_timed_rounds_are_kept_and_summarized(interleaved):
    results, _ = interleaved
    for name in ("A", "B"):
        e = results[name]
        assert e["status"] == "ok" and e["load_seconds"] > 0 and e["peak_rss_mb"] >= e["rss_after_load_mb"] > 0
        w = e["workloads"]
        assert len(w["greedy"]["decode_tokens_per_second"]["values"]) == SETTINGS["repeats"]
        assert w["greedy"]["tokens"] == [7] * SETTINGS["decode_new"]
        assert len(w["batch"]["tokens_per_second"]["values"]) == SETTINGS["repeats"]
        assert len(w["steps"]["latency_ms"]) == SETTINGS["steps_new"]
    assert len(results["A"]["workloads"]["beam"]["seconds"]["values"]) == SETTINGS["repeats"]


def test_a_worker_that_stops_answering_times_out_with_one_line(tmp_path):
    spec = {
        "adapter": "tests.fake_engine",
        "job": "speed",
        "threads": 1,
        "inputs": {"chat": [1]},
        "settings": {**SETTINGS, "decode_new": 5000},
        "name": "slow",
        "calls": str(tmp_path / "calls.txt"),
    }
    worker = interleave.Worker(spec, tmp_path / "worker.log", timeout=60)
    assert worker.call(None)["status"] == "ok"
    worker.timeout = 1  # 5,000 tokens at 1 ms each take 5 s
    assert worker.call({"workload": "greedy"}) == {"status": "failed", "error": "timed out after 1s"}
    assert worker.closed and worker.process.returncode is not None
