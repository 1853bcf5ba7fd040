"""llama.cpp's perplexity of a GGUF file over a text, in the same windows and on the same token ids as
`memgpt perplexity` (memgpt_runtime/perplexity.py), through llama-cpp-python.

Usage: .venv/bin/python tools/llamacpp_perplexity.py FILE.gguf EXPORT_DIR TEXTFILE [--context N] [--stride S]
The export folder gives the tokenizer, so both engines score identical ids; llama.cpp runs each window from an
empty cache with every position's logits kept (logits_all), 2 threads. Prints one JSON line.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import memgpt_runtime as mr  # noqa: E402
from memgpt_runtime.perplexity import read_text, windows  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("gguf")
    parser.add_argument("export")
    parser.add_argument("text")
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--stride", type=int)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    stride = args.stride or args.context // 2
    from llama_cpp import Llama

    ids = mr.load(args.export).tokenizer.encode(read_text(args.text))
    llm = Llama(
        model_path=args.gguf,
        n_ctx=args.context,
        n_batch=args.context,
        n_threads=args.threads,
        logits_all=True,
        verbose=False,
    )
    start, total, scored = time.perf_counter(), 0.0, 0
    for begin, end, first in windows(len(ids), args.context, stride):
        llm.reset()
        llm.eval(ids[begin:end])
        logits = np.asarray(llm.scores[: end - begin], np.float64)  # (window, vocab)
        predicting = logits[first - 1 - begin : end - 1 - begin]
        targets = np.array(ids[first:end])
        top = predicting.max(axis=1)
        total += float(
            (
                top
                + np.log(np.exp(predicting - top[:, None]).sum(axis=1))
                - predicting[np.arange(len(targets)), targets]
            ).sum()
        )
        scored += len(targets)
    print(
        json.dumps(
            {
                "engine": "llama.cpp",
                "model": args.gguf,
                "text": args.text,
                "perplexity": float(np.exp(total / scored)),
                "tokens": scored,
                "context": args.context,
                "stride": stride,
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
