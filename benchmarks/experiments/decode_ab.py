"""A/B decode speed: load several engines in one process, alternate greedy 128-token runs, 2 threads.

Alternating runs in one process let machine noise hit every engine alike, which a suite run (one engine after
another) cannot. Usage: .venv/bin/python benchmarks/experiments/decode_ab.py ROUNDS name=folder ... (folder 'genai:PATH' loads onnxruntime-genai). Decode tok/s per run is
(n-1)/(t_last - t_first) as in benchmarks/workloads.py; reports medians and ratios against the first engine.
"""
import sys, time, json
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
import numpy as np
import memgpt_runtime as mr
from benchmarks import prompts, suite
from benchmarks.engines import memgpt_engine, genai_engine, llamacpp_engine

def _timed_greedy(engine, prompt, new_tokens):
    stamps = []
    start = time.perf_counter()
    out = engine.generate([prompt], new_tokens, on_token=lambda: stamps.append(time.perf_counter()))
    assert len(stamps) == new_tokens
    return time.perf_counter() - start, [s - start for s in stamps], out[0]

rounds = int(sys.argv[1])
specs = [a.split("=", 1) for a in sys.argv[2:]]
first = next(f for _, f in specs if ":" not in f)
lm0 = mr.load(first, threads=2)
inputs = prompts.make_inputs(lm0.tokenizer, suite.DEFAULT_SETTINGS)
pad = prompts.free_token_id(inputs, lm0.manifest.vocab_size)
eos = list(lm0.manifest.tokens.eos_token_ids)
del lm0
engines = {}
for name, folder in specs:
    if folder.startswith("llamacpp:"):
        engines[name] = llamacpp_engine.load({"gguf": folder[9:], "threads": 2, "context": 2048, "eos_ids": eos})
    elif folder.startswith("genai:"):
        engines[name] = genai_engine.load({"folder": folder[6:], "threads": 2, "free_pad_id": pad})
    else:
        engines[name] = memgpt_engine.load({"folder": folder, "threads": 2})
chat = inputs["chat"]
n = 128
rates = {k: [] for k in engines}
for e in engines.values():
    _timed_greedy(e, chat, 16)
for r in range(rounds):
    order = list(engines) if r % 2 == 0 else list(reversed(engines))
    for k in order:
        _, stamps, _ = _timed_greedy(engines[k], chat, n)
        rates[k].append((n - 1) / (stamps[-1] - stamps[0]))
base = list(engines)[0]
for k, v in rates.items():
    ratio = np.median(np.array(v) / np.array(rates[base]))
    print(f"{k}: median {np.median(v):.1f} tok/s [{min(v):.1f}-{max(v):.1f}], per-round ratio vs {base} median {ratio:.3f}", flush=True)
