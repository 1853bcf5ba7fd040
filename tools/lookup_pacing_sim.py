"""Replay prompt-lookup pacing policies over the answers of a `benchmarks.lookup` run under a cost model, without
running the model: decode speed with lookup over plain decoding, in plain steps.

    .venv/bin/python tools/lookup_pacing_sim.py RUN.json FOLDER [--row 0.35] [--check 0.05] [--int4-free 1]

Each round drafts from the sequence so far (`lookup.draft`, K = 10, n-grams of 2), the policy picks how many
drafted tokens to check, and the recorded answer says how many the model keeps; a check of n positions costs
1 + CHECK + ROW * (n - free) steps, a plain step 1 (`tools/verify_cost.py` measures ROW and CHECK). It assumes the
answer does not depend on the pacing (with lookup it can differ from token to token in a near tie). Policies:
the pacing before commit bcb685f (a gate on the moving share of drafts whose first token was kept, transformers'
length schedule), `lookup.Pacing`, and fixed draft lengths. FOLDER gives the tokenizer of the chat template.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.lookup import grounded_prompts
from memgpt_runtime import lookup
from memgpt_runtime.manifest import read_manifest
from memgpt_runtime.tokenizer import Tokenizer


class GateAndSchedule:
    """The pacing before commit bcb685f: check while the moving share of first-token hits is >= 0.4, the length
    +2 after a draft kept whole, -1 otherwise."""

    def __init__(self, most: int, free: int):
        self.most, self.length, self.hits = most, most, 1.0

    def limit(self) -> int:
        return self.length if self.hits >= 0.4 else 0

    def record(self, kept: int, missed: bool, checked: int) -> None:
        self.hits = 0.7 * self.hits + 0.3 * (kept > 0)
        if checked:
            self.length = min(self.most, self.length + 2) if not missed else max(1, self.length - 1)


class ByCost:
    def __init__(self, most: int, free: int):
        self.pacing = lookup.Pacing(most, free)

    def limit(self) -> int:
        return self.pacing.limit()

    def record(self, kept: int, missed: bool, checked: int) -> None:
        self.pacing.record(kept, missed)


class Fixed:
    def __init__(self, length: int):
        self.length = length

    def limit(self) -> int:
        return self.length

    def record(self, kept: int, missed: bool, checked: int) -> None:
        pass


def replay(sequence: list[int], start: int, policy, cost, eos: np.ndarray, k: int = 10) -> float:
    """Speed over plain decoding of the answer sequence[start:], its first token from the prefill."""
    seq = np.asarray(sequence, np.int64)
    i, spent = start + 1, 0.0
    while i < len(seq):
        found = lookup.draft(seq[:i], k, 2, len(seq), eos)
        drafted = found[: policy.limit()]
        kept = 0
        while kept < len(drafted) and i + kept < len(seq) and drafted[kept] == seq[i + kept]:
            kept += 1
        if len(drafted):
            spent += cost(len(drafted) + 1)
            policy.record(kept, kept < len(drafted), len(drafted))
            i += kept + 1
        else:
            spent += 1.0
            if len(found):
                right = bool(found[0] == seq[i])
                policy.record(int(right), not right, 0)
            i += 1
    return (len(seq) - start - 1) / spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the --out JSON of python -m benchmarks.lookup")
    parser.add_argument("folder", type=Path, help="an export of the default model (its tokenizer)")
    parser.add_argument("--row", type=float, default=0.35, help="steps one more position costs")
    parser.add_argument("--check", type=float, default=0.05, help="steps a check costs beyond its positions")
    parser.add_argument(
        "--int4-free",
        type=int,
        default=1,
        help="rows an int4 step runs anyway: 2 for a run loaded with batch_invariant=True (a scratch row), else 1",
    )
    args = parser.parse_args()
    manifest = read_manifest(args.folder)
    tokenizer = Tokenizer(args.folder / manifest.tokenizer_file, manifest.tokens, manifest.chat_template)
    table = grounded_prompts()
    runs = json.loads(args.run.read_text())["runs"]
    print(f"cost of a check of n positions: 1 + {args.check} + {args.row} * (n - free) steps")
    print("| engine | prompt | before bcb685f | lookup.Pacing | d = 1 | d = 3 | d = 10 |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for engine, free in (("memgpt int4 lookup", args.int4_free), ("memgpt int8 lookup", 1)):
        for name, rounds in runs.get(engine, {}).items():
            prompt = tokenizer.apply_chat_template(
                [{"role": "user", "content": table[name][1]}], add_generation_prompt=True
            )
            sequence = list(prompt) + rounds[0]["tokens"]

            def cost(n: int, free: int = free) -> float:
                return 1 + args.check + args.row * max(0, n - free)

            policies = [GateAndSchedule(10, free), ByCost(10, free), Fixed(1), Fixed(3), Fixed(10)]
            eos = np.asarray(manifest.tokens.eos_token_ids, np.int64)
            speeds = [replay(sequence, len(prompt), p, cost, eos) for p in policies]
            print(f"| {engine} | {name} | " + " | ".join(f"{s:.2f}x" for s in speeds) + " |")


if __name__ == "__main__":
    main()
