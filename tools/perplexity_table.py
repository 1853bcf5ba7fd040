"""A markdown table of sliding-window perplexities: memgpt folders (and llama.cpp on GGUF files) over text files.

Usage: .venv/bin/python tools/perplexity_table.py --text FILE [--text FILE ...] [--context N] [--stride S]
           NAME=EXPORT_DIR ... [NAME=llamacpp:FILE.gguf@EXPORT_DIR ...]
The first folder is the reference the percentages are taken against. llama.cpp rows (llama-cpp-python) score
the same token ids, from EXPORT_DIR's tokenizer, in the same windows (tools/llamacpp_perplexity.py).
"""

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import json  # noqa: E402

import memgpt_runtime as mr  # noqa: E402
from memgpt_runtime.perplexity import perplexity, read_text  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("engines", nargs="+")
    parser.add_argument("--text", action="append", required=True)
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--stride", type=int)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    stride = args.stride or args.context // 2
    rows = {}
    for spec in args.engines:
        name, where = spec.split("=", 1)
        rows[name] = {}
        for text in args.text:
            if where.startswith("llamacpp:"):
                gguf, export = where[len("llamacpp:") :].split("@")
                out = subprocess.run(
                    [
                        sys.executable,
                        str(Path(__file__).with_name("llamacpp_perplexity.py")),
                        gguf,
                        export,
                        text,
                        "--context",
                        str(args.context),
                        "--stride",
                        str(stride),
                        "--threads",
                        str(args.threads),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                rows[name][text] = json.loads(out.stdout.strip().splitlines()[-1])["perplexity"]
            else:
                lm = mr.load(where, threads=args.threads)
                rows[name][text] = perplexity(lm, lm.tokenizer.encode(read_text(text)), args.context, stride).perplexity
            print(f"{name} {text}: {rows[name][text]:.4f}", file=sys.stderr, flush=True)
    base = rows[next(iter(rows))]
    print("| engine | " + " | ".join(Path(t).name for t in args.text) + " |")
    print("|---|" + "---|" * len(args.text))
    for name, values in rows.items():
        cells = [f"{values[t]:.3f} ({100 * (values[t] / base[t] - 1):+.2f}%)" for t in args.text]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
