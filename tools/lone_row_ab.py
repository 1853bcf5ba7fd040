"""What the scratch row of a lone-row decode step costs: greedy decode tokens/s of `lm.generate` at batch 1 with
the session's `min_rows` forced to 1 and to 2, interleaved round by round.

    .venv/bin/python tools/lone_row_ab.py EXPORT_DIR [--rounds 8] [--new-tokens 128] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import memgpt_runtime as mr


def decode_rate(lm, prompt: list[int], new_tokens: int) -> float:
    stamps = []
    for _event in lm.generate_steps([prompt], max_new_tokens=new_tokens, min_new_tokens=new_tokens):
        stamps.append(time.perf_counter())
    return (len(stamps) - 2) / (stamps[-2] - stamps[0])  # steps after the first token (the last event is Done)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    lm = mr.load(args.folder, threads=args.threads)
    prompt = lm.encode_prompt("Write a short story about a lighthouse keeper.", chat=True)
    print(f"{args.folder}: detected min_rows = {lm.session.min_rows}")
    rates = {1: [], 2: []}
    decode_rate(lm, prompt, 16)  # warm-up
    for r in range(args.rounds):
        for rows in (1, 2) if r % 2 == 0 else (2, 1):
            lm.session._min_rows = rows
            rates[rows].append(decode_rate(lm, prompt, args.new_tokens))
    ratio = np.array(rates[2]) / np.array(rates[1])
    for rows, values in rates.items():
        print(f"min_rows {rows}: median {np.median(values):.1f} tokens/s  {[round(v, 1) for v in values]}")
    print(f"two rows / one row: median {np.median(ratio):.3f}x (min {ratio.min():.3f}, max {ratio.max():.3f})")


if __name__ == "__main__":
    main()
