"""Cost of one prompt-lookup check of n positions against one decode step, on a lone row: python tools/lookup_probe.py DIR"""

import sys
import time
from pathlib import Path

import numpy as np

import memgpt_runtime as mr

folder = sys.argv[1]
lm = mr.load(folder, threads=2)
ids = lm.tokenizer.encode(open(Path(__file__).parent.parent / "benchmarks/data/english.txt").read())[:400]
state = lm.session.new_state(1, 1024)
state.prefill(np.array([ids]), np.ones((1, len(ids)), np.int64))


def step_time(reps=20):
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        state.step(np.array([5]))
        ts.append(time.perf_counter() - t)
        state.rewind(1)
    return np.median(ts)


def verify_time(n, reps=20):
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        state.verify(np.full((1, n), 5))
        ts.append(time.perf_counter() - t)
        state.rewind(n)
    return np.median(ts)


def alternate(n, reps=20):  # a verify then a step: the rebinding between them included
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        state.verify(np.full((1, n), 5))
        state.step(np.array([5]))
        ts.append(time.perf_counter() - t)
        state.rewind(n + 1)
    return np.median(ts)


for _ in range(2):
    s = step_time()
    print(f"step {s * 1e3:.2f} ms  rows of a lone decode step {lm.session.min_rows}")
    for n in (2, 3, 5, 8, 11, 16):
        v = verify_time(n)
        print(f"verify n={n}: {v * 1e3:.2f} ms = {v / s:.2f} steps;  verify+step {alternate(n) * 1e3:.2f} ms")
