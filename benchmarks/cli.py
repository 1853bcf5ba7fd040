"""The command line of the suite: `python -m benchmarks [--quick]`, and `memgpt bench` through `register`.

A run has two parts, the decoder-only suite (suite.py) and the encoder-decoder part (seq2seq_suite.py), with one
result and one report; `--no-seq2seq` skips the second, `--only-seq2seq` runs only it.

`register(subparsers)` adds the "bench" subcommand (for the `memgpt.commands` entry-point group); it imports
nothing heavy: the suite, torch and the engines load only when it runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_CACHE = HERE / ".cache"
DEFAULT_RESULTS = HERE / "results"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="a smoke run on tiny random models (a minute or two)")
    parser.add_argument(
        "--out",
        type=Path,
        help="results folder: new, empty or an earlier run's (default benchmarks/results/<timestamp>)",
    )
    parser.add_argument("--threads", type=int, default=2, help="threads for every engine (default 2)")
    parser.add_argument(
        "--engines", help="comma-separated engine names or prefixes, e.g. 'pytorch,memgpt' (default all)"
    )
    parser.add_argument("--repeats", type=int, help="timed repeats per workload (default 3)")
    parser.add_argument("--no-quality", action="store_true", help="skip perplexity and greedy agreement")
    parser.add_argument("--no-seq2seq", action="store_true", help="skip the encoder-decoder (Marian) part")
    parser.add_argument("--only-seq2seq", action="store_true", help="run only the encoder-decoder (Marian) part")
    parser.add_argument(
        "--cache", type=Path, default=DEFAULT_CACHE, help="where built models are kept (default benchmarks/.cache)"
    )


def register(subparsers) -> None:
    """Add `bench` to the `memgpt` command (entry point group `memgpt.commands`)."""
    parser = subparsers.add_parser(
        "bench", help="benchmark engines against PyTorch", description=__doc__.splitlines()[0]
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def select_engines(text: str | None):
    """The engines `--engines` names (every engine without it), the baseline always among them; BenchError names
    an unknown one."""
    from .engines import BASELINE, ENGINES, by_name
    from .errors import BenchError

    if not text:
        return list(ENGINES)
    wanted = [w.strip() for w in text.split(",") if w.strip()]
    chosen = [e for e in ENGINES if any(e.name == w or e.name.startswith(w) for w in wanted)]
    unknown = [w for w in wanted if not any(e.name == w or e.name.startswith(w) for e in ENGINES)]
    if unknown:
        raise BenchError(f"unknown engine {unknown[0]!r}; known: {', '.join(e.name for e in ENGINES)}")
    if by_name(BASELINE) not in chosen:
        chosen.insert(0, by_name(BASELINE))  # ratios need the baseline of the same run
    return chosen


def run(args: argparse.Namespace) -> int:
    """Run the suite as `args` say; 0 when the baseline ran in every part, else 1. BenchError for a bad option."""
    from . import report, seq2seq_suite, suite
    from .errors import BenchError

    if args.threads < 1 or (args.repeats is not None and args.repeats < 1):
        raise BenchError("--threads and --repeats must be at least 1")
    if args.threads > (os.cpu_count() or 1):
        raise BenchError(
            f"--threads must be at most {os.cpu_count()}, this machine's CPUs; more threads than CPUs only slow every engine"
        )
    if args.no_seq2seq and args.only_seq2seq:
        raise BenchError("--no-seq2seq and --only-seq2seq exclude each other; give one of them")
    engines = select_engines(args.engines)
    settings = dict(suite.QUICK_SETTINGS if args.quick else suite.DEFAULT_SETTINGS)
    seq2seq_settings = dict(seq2seq_suite.QUICK_SETTINGS if args.quick else seq2seq_suite.DEFAULT_SETTINGS)
    if args.repeats:
        settings["repeats"] = seq2seq_settings["repeats"] = args.repeats
    out = args.out or DEFAULT_RESULTS / (time.strftime("%Y%m%d-%H%M%S") + ("-quick" if args.quick else ""))
    problem = out_problem(out)
    if problem:
        raise BenchError(problem)
    out.mkdir(parents=True, exist_ok=True)
    quality = not args.no_quality
    if args.only_seq2seq:
        result = suite.header(args.threads)
    else:
        result = suite.run_suite(settings, args.threads, args.cache, engines, quality=quality, log_dir=out)
    if not args.no_seq2seq:
        result["seq2seq"] = seq2seq_suite.run_part(seq2seq_settings, args.threads, args.cache, engines, quality, out)
    result["command"] = "python -m benchmarks " + " ".join(sys.argv[1:])
    paths = report.write(result, out)
    print(paths["markdown"].read_text())
    print(f"wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    return 0 if baselines_ok(result) else 1


def out_problem(out: Path) -> str | None:
    """Why the suite may not write its results, logs and plots into `out` (None if it may): it overwrites files
    of its own names, so `out` must be new, empty or an earlier run's folder (one with results.json)."""
    if out.exists() and not out.is_dir():
        return f"--out {out} exists and is not a folder; pick a new or empty folder"
    if out.is_dir() and any(out.iterdir()) and not (out / "results.json").is_file():
        return f"--out {out} is not empty and holds no earlier run (no results.json); pick a new or empty folder, or remove it yourself"
    return None


def baselines_ok(result: dict) -> bool:
    """Whether the baseline ran in every part that ran. An engine's failure is a result, reported in the table;
    without the baseline there are no ratios."""
    parts = [part for part in (result if "engines" in result else None, result.get("seq2seq")) if part is not None]
    return all(part.get("engines", {}).get(result["baseline"], {}).get("status") == "ok" for part in parts)


def main(argv: list[str] | None = None) -> int:
    """`python -m benchmarks`: as `memgpt bench`, a BenchError is one line on stderr and its exit code."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    from .errors import BenchError

    try:
        return run(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
