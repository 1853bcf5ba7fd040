"""Perplexity of memgpt folders on the suite's text, with the benchmark's own nll (benchmarks/engines/memgpt_engine.py).

Usage: .venv/bin/python benchmarks/experiments/perplexity.py FOLDER ...
"""
import sys, time
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
import numpy as np
import memgpt_runtime as mr
from benchmarks.engines.memgpt_engine import MemgptEngine
from benchmarks.prompts import TEXT_FILE
for folder in sys.argv[1:]:
    lm = mr.load(folder, threads=2)
    ids = lm.tokenizer.encode(TEXT_FILE.read_text(encoding="utf-8"))
    t = time.time()
    nll = MemgptEngine(lm).nll(ids)
    print(f"{folder}: perplexity {np.exp(nll.mean()):.3f} over {len(nll)} tokens ({time.time()-t:.0f}s)", flush=True)
