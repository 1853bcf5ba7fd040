"""A/B of decode-step graphs alone: one session run per step at a fixed past length, no generation loop.

    .venv/bin/python tools/graph_ab.py NAME=MODEL.onnx NAME=genai:MODEL.onnx ... [--past 300] [--rounds 12]
        [--runs 100] [--threads 2]

Each graph gets its own session (the runtime's options) and io binding: 30 layers of random past keys and values
bound as both past and present (GroupQueryAttention's shared buffer), one new token. A memgpt fused graph is fed
`seqlens_k` = PAST and `total_sequence_length` = PAST + 1; an onnxruntime-genai graph (`genai:`) an attention mask
of PAST + 1 ones, as its own loop would. Rounds of RUNS runs each, the graphs in an order that reverses every
round; prints the median milliseconds per run and the median per-round ratio to the first graph. The layer count,
KV heads and head size are SmolLM2-135M's: the tool compares graphs of the default model.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort

from memgpt_runtime.session import make_session_options

LAYERS, KV_HEADS, HEAD_SIZE = 30, 3, 64


def bound_session(path: str, genai: bool, past: int, threads: int):
    """(session, binding, arrays the binding points into) for one decode step at `past` positions."""
    session = ort.InferenceSession(path, make_session_options(threads), providers=["CPUExecutionProvider"])
    binding, keep = session.io_binding(), []
    rng = np.random.default_rng(0)
    for i in range(LAYERS):
        for kind in ("key", "value"):
            buffer = rng.random((1, KV_HEADS, past + 64, HEAD_SIZE), dtype=np.float32)
            keep.append(buffer)
            binding.bind_input(f"past_key_values.{i}.{kind}", "cpu", 0, np.float32, buffer.shape, buffer.ctypes.data)
            binding.bind_output(f"present.{i}.{kind}", "cpu", 0, np.float32, buffer.shape, buffer.ctypes.data)
    if genai:
        feeds = {"input_ids": np.array([[100]], np.int64), "attention_mask": np.ones((1, past + 1), np.int64)}
    else:
        feeds = {
            "input_ids": np.array([[100]], np.int64),
            "seqlens_k": np.array([past], np.int32),
            "total_sequence_length": np.array(past + 1, np.int32),
            "last_index": np.array([0], np.int64),
        }
    for name, value in feeds.items():
        keep.append(value)
        binding.bind_cpu_input(name, value)
    vocab = next(o for o in session.get_outputs() if o.name == "logits").shape[-1]
    logits = np.empty((1, 1, vocab) if genai else (1, vocab), np.float32)
    keep.append(logits)
    binding.bind_output("logits", "cpu", 0, np.float32, logits.shape, logits.ctypes.data)
    return session, binding, keep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("graphs", nargs="+", metavar="NAME=[genai:]MODEL.onnx")
    parser.add_argument("--past", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    cases = {}
    for spec in args.graphs:
        name, path = spec.split("=", 1)
        genai = path.startswith("genai:")
        cases[name] = bound_session(path.removeprefix("genai:"), genai, args.past, args.threads)
    for session, binding, _ in cases.values():
        for _ in range(20):
            session.run_with_iobinding(binding)
    times = {name: [] for name in cases}
    for r in range(args.rounds):
        for name in list(cases) if r % 2 == 0 else list(reversed(cases)):
            session, binding, _ = cases[name]
            start = time.perf_counter()
            for _ in range(args.runs):
                session.run_with_iobinding(binding)
            times[name].append((time.perf_counter() - start) / args.runs * 1e3)
    first = np.array(next(iter(times.values())))
    for name, t in times.items():
        ratio = np.median(np.array(t) / first)
        print(f"{name}: {np.median(t):.3f} ms per run, per-round ratio to the first {ratio:.3f}")


if __name__ == "__main__":
    main()
