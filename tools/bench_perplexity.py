"""Perplexity of memgpt folders with the benchmark's own definition (one window over the whole text,
benchmarks/engines/memgpt_engine.py), on the suite's text and on any other text files.

    .venv/bin/python tools/bench_perplexity.py FOLDER ... [--text FILE] [--chars 6000] [--tokens 1300]

Without --text it scores benchmarks/data/english.txt whole. Each --text file is cut to its first --chars
characters, then to its first --tokens tokens (RESULTS.md used the GPL-3 of /usr/share/common-licenses and
vim's usr_01.txt so, 1,300 tokens each).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import memgpt_runtime as mr
from benchmarks.engines.memgpt_engine import MemgptEngine
from benchmarks.prompts import TEXT_FILE
from memgpt_runtime.perplexity import read_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", metavar="FOLDER")
    parser.add_argument("--text", action="append", default=[], help="another text file (repeatable)")
    parser.add_argument("--chars", type=int, default=6000, help="characters read from each --text file")
    parser.add_argument("--tokens", type=int, default=1300, help="tokens scored of each --text file")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    texts = {TEXT_FILE.name: (TEXT_FILE.read_text(encoding="utf-8"), None)}
    texts.update({Path(p).name: (read_text(p)[: args.chars], args.tokens) for p in args.text})
    for folder in args.folders:
        lm = mr.load(folder, threads=args.threads)
        for name, (text, limit) in texts.items():
            ids = lm.tokenizer.encode(text)[:limit]
            start = time.perf_counter()
            nll = MemgptEngine(lm).nll(ids)
            seconds = time.perf_counter() - start
            print(
                f"{folder} {name}: perplexity {np.exp(nll.mean()):.3f} over {len(nll)} tokens ({seconds:.0f}s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
