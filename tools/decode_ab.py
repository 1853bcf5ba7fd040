"""A/B decode speed: several engines loaded in one process, greedy 128-token runs alternating round by round.

Alternating runs in one process let machine noise hit every engine alike, which a suite run (one engine after
another) cannot. Decode tok/s of a run is (n-1)/(t_last - t_first), as in benchmarks/workloads.py; prints
medians and the median per-round ratio against the first engine.

    .venv/bin/python tools/decode_ab.py ROUNDS NAME=FOLDER ... [--threads 2] [--new-tokens 128]

FOLDER is a memgpt export, `genai:PATH` an onnxruntime-genai folder, `llamacpp:FILE.gguf` a GGUF file; the
first memgpt folder gives the prompt's tokenizer.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import memgpt_runtime as mr
from benchmarks import prompts, suite
from benchmarks.engines import genai_engine, llamacpp_engine, memgpt_engine


def timed_greedy(engine, prompt: list[int], new_tokens: int) -> list[float]:
    """Seconds from the start of the run to each new token."""
    stamps = []
    start = time.perf_counter()
    engine.generate([prompt], new_tokens, on_token=lambda: stamps.append(time.perf_counter()))
    if len(stamps) != new_tokens:
        raise SystemExit(f"an engine made {len(stamps)} tokens, not {new_tokens}")
    return [s - start for s in stamps]


def load_engines(specs: list[tuple[str, str]], threads: int):
    first = next((f for _, f in specs if ":" not in f), None)
    if first is None:
        raise SystemExit("give at least one memgpt folder: its tokenizer makes the prompt")
    lm = mr.load(first, threads=threads)
    inputs = prompts.make_inputs(lm.tokenizer, suite.DEFAULT_SETTINGS)
    pad = prompts.free_token_id(inputs, lm.manifest.vocab_size)
    eos = list(lm.manifest.tokens.eos_token_ids)
    del lm
    engines = {}
    for name, folder in specs:
        if folder.startswith("llamacpp:"):
            spec = {"gguf": folder[len("llamacpp:") :], "threads": threads, "context": 2048, "eos_ids": eos}
            engines[name] = llamacpp_engine.load(spec)
        elif folder.startswith("genai:"):
            engines[name] = genai_engine.load(
                {"folder": folder[len("genai:") :], "threads": threads, "free_pad_id": pad}
            )
        else:
            engines[name] = memgpt_engine.load({"folder": folder, "threads": threads})
    return engines, inputs["chat"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rounds", type=int)
    parser.add_argument("engines", nargs="+", metavar="NAME=FOLDER")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=128)
    args = parser.parse_args()
    engines, chat = load_engines([spec.split("=", 1) for spec in args.engines], args.threads)
    n = args.new_tokens
    rates = {k: [] for k in engines}
    for engine in engines.values():  # warm-up
        timed_greedy(engine, chat, 16)
    for r in range(args.rounds):
        for k in list(engines) if r % 2 == 0 else list(reversed(engines)):
            stamps = timed_greedy(engines[k], chat, n)
            rates[k].append((n - 1) / (stamps[-1] - stamps[0]))
    base = next(iter(engines))
    for k, v in rates.items():
        ratio = np.median(np.array(v) / np.array(rates[base]))
        print(
            f"{k}: median {np.median(v):.1f} tok/s [{min(v):.1f}-{max(v):.1f}], per-round ratio vs {base} median {ratio:.3f}"
        )


if __name__ == "__main__":
    main()
