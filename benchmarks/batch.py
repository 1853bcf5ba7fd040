"""`memgpt batch` on this machine: the local engine against Ray Data with 1 and 2 replicas, and the bar's check.

python -m benchmarks.batch check DIR [--rows 30]     the same rows (and a malformed line) through `memgpt batch`
    locally and with `--ray local --replicas 2`: every id once in both, texts equal between the two and equal to
    `memgpt generate --chat` of each row, all through the real commands.
python -m benchmarks.batch speed DIR [--rows 96] [--rounds 3] [--batch-size 32] [--threads 2]
    the same rows, greedy, `--new-tokens` tokens each (min_tokens = max_tokens, so every path makes the same
    tokens), through the local engine (`--threads` threads), Ray with 1 replica of `--threads` threads, and Ray with
    2 replicas of `--threads`/2 threads, taking turns round after round in one process (one Ray cluster, started
    once and not timed).

What `speed` times, per run: `total`, from the job's start (model load or actor start included) to its last row
written; `steady`, from the moment the first `--batch-size` rows are written to the last row: the rows after the
first batch, when every path is loaded and running. `steady` favours Ray: a finished batch reaches the driver
late while its replica already runs the next one, so part of Ray's work falls before that clock starts. Ray's
per-row overhead is therefore read on `total` (Ray 1 replica over local, equal threads, per round), which also
charges Ray its start. Rows are chat prompts made from
the suite's English text (not seen by any test); tokenization runs inside the timed part on every path.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .prompts import TEXT_FILE

MEMGPT = [sys.executable, "-m", "memgpt_runtime.cli"]


def held_out_prompts(count: int) -> list[str]:
    """`count` chat prompts, each asking for a summary of one sentence of the suite's English text."""
    sentences = [
        s.strip() for s in re.split(r"(?<=[.!?])\s+", TEXT_FILE.read_text(encoding="utf-8")) if len(s.split()) >= 8
    ]
    asks = ["Summarize in a few words: ", "Rewrite more simply: ", "What is this sentence about? "]
    return [asks[i % len(asks)] + sentences[i % len(sentences)] for i in range(count)]


def rows_of(prompts: list[str], new_tokens: int, exact: bool) -> list[dict]:
    rows = []
    for i, prompt in enumerate(prompts):
        row = {
            "id": f"row-{i}",
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": new_tokens,
            "temperature": 0,
        }
        if exact:
            row["min_tokens"] = new_tokens
        rows.append(row)
    return rows


def write_rows(path: Path, rows: list[dict], malformed_at: int | None = None) -> None:
    lines = [json.dumps(r) for r in rows]
    if malformed_at is not None:
        lines.insert(malformed_at, '{"id": "broken", "messages": [')
    path.write_text("\n".join(lines) + "\n")


def check(args) -> int:
    """The bar: every id once, locally and on Ray with 2 replicas; texts equal between them and to `memgpt generate`."""
    prompts = held_out_prompts(args.rows)
    work = Path(tempfile.mkdtemp(prefix="batch-check-"))
    write_rows(work / "in.jsonl", rows_of(prompts, args.new_tokens, exact=False), malformed_at=args.rows // 2)
    outputs = {}
    for name, extra in (("local", []), ("ray2", ["--ray", "local", "--replicas", "2", "--batch-size", "8"])):
        start = time.perf_counter()
        run = subprocess.run(
            [*MEMGPT, "batch", args.model, work / "in.jsonl", "-o", work / f"{name}.jsonl", *extra],
            capture_output=True,
            text=True,
        )
        print(
            f"{name}: exit {run.returncode} in {time.perf_counter() - start:.1f} s; {run.stderr.strip().splitlines()[-1]}"
        )
        if run.returncode != 0:
            print(run.stderr, file=sys.stderr)
            return 1
        lines = [json.loads(x) for x in (work / f"{name}.jsonl").read_text().splitlines()]
        keys = [r.get("id") if "line" not in r else f"line {r['line']}" for r in lines]
        assert len(keys) == len(set(keys)) == args.rows + 1, f"{name}: {len(keys)} rows, {len(set(keys))} distinct"
        outputs[name] = {k: r for k, r in zip(keys, lines)}
    same = sum(outputs["local"][k] == outputs["ray2"][k] for k in outputs["local"])
    generated = 0
    for i, prompt in enumerate(prompts):
        run = subprocess.run(
            [*MEMGPT, "generate", args.model, "--chat", prompt, "--max-new-tokens", str(args.new_tokens), "--json"],
            capture_output=True,
            text=True,
        )
        generated += json.loads(run.stdout)["outputs"][0]["text"] == outputs["local"][f"row-{i}"]["text"]
    print(f"every id once: local {len(outputs['local'])}, ray2 {len(outputs['ray2'])} rows ({args.rows} + 1 malformed)")
    print(
        f"rows equal local == ray2: {same}/{args.rows + 1}; texts equal to `memgpt generate`: {generated}/{args.rows}"
    )
    return 0 if same == args.rows + 1 and generated == args.rows else 1


def speed(args) -> int:
    import ray

    from memgpt_runtime.batch.local import run_local
    from memgpt_runtime.batch.output import PartialOutput
    from memgpt_runtime.batch.ray_data import run_on_ray
    from memgpt_runtime.batch.rows import Row

    rows = [
        Row(i + 1, r["id"], {k: v for k, v in r.items() if k != "id"})
        for i, r in enumerate(rows_of(held_out_prompts(args.rows), args.new_tokens, exact=True))
    ]
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    half = max(args.threads // 2, 1)
    paths = {
        "local": lambda out, on_row: run_local(Path(args.model), rows, out, args.threads, args.slots, on_row=on_row),
        f"ray-1x{args.threads}": lambda out, on_row: run_on_ray(
            Path(args.model), rows, out, "local", 1, args.threads, args.batch_size, args.slots, on_row=on_row
        ),
        f"ray-2x{half}": lambda out, on_row: run_on_ray(
            Path(args.model), rows, out, "local", 2, half, args.batch_size, args.slots, on_row=on_row
        ),
    }
    results = {name: [] for name in paths}
    texts = {}
    for r in range(args.rounds):
        names = list(paths) if r % 2 == 0 else list(reversed(paths))
        for name in names:
            with tempfile.TemporaryDirectory() as work:
                out = PartialOutput(Path(work) / "out.jsonl")
                stamps = []
                start = time.perf_counter()
                paths[name](out, lambda row, stamps=stamps: stamps.append(time.perf_counter()))
                out.finish()
                total = stamps[-1] - start
                steady = stamps[-1] - stamps[min(args.batch_size, len(stamps)) - 1]
                texts[name] = {
                    json.loads(x)["id"]: json.loads(x)["text"]
                    for x in (Path(work) / "out.jsonl").read_text().splitlines()
                }
            tokens = args.rows * args.new_tokens
            results[name].append((total, steady))
            print(
                f"round {r} {name}: total {total:.2f} s ({args.rows / total:.2f} rows/s, {tokens / total:.1f} tokens/s), "
                f"steady {steady:.2f} s for {args.rows - args.batch_size} rows; load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
    ray.shutdown()
    print(
        f"\n{args.rows} rows x {args.new_tokens} tokens, batch size {args.batch_size}, {args.slots} slots per engine, "
        f"median of {args.rounds} rounds; load average {os.getloadavg()}"
    )
    local_total, local_steady = (statistics.median(x) for x in zip(*results["local"]))
    print("| path | total s | rows/s | tokens/s | steady s (rows after the first batch) | steady vs local |")
    print("|---|---|---|---|---|---|")
    for name, runs in results.items():
        total, steady = (statistics.median(x) for x in zip(*runs))
        tokens = args.rows * args.new_tokens
        print(
            f"| {name} | {total:.2f} | {args.rows / total:.2f} | {tokens / total:.1f} | {steady:.2f} | {steady / local_steady:.3f} |"
        )
    for i, what in ((0, "total"), (1, "steady")):
        ratios = [r[i] / lo[i] for r, lo in zip(results[f"ray-1x{args.threads}"], results["local"])]
        print(
            f"Ray 1 replica {what} / local {what} per round: {', '.join(f'{x:.3f}' for x in ratios)}; "
            f"median {statistics.median(ratios):.3f}"
        )
    same = all(texts[name] == texts["local"] for name in texts)
    print(f"texts equal on every path: {same}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.batch", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("check")
    c.add_argument("model")
    c.add_argument("--rows", type=int, default=30)
    c.add_argument("--new-tokens", type=int, default=32)
    c.set_defaults(func=check)
    s = sub.add_parser("speed")
    s.add_argument("model")
    s.add_argument("--rows", type=int, default=96)
    s.add_argument("--new-tokens", type=int, default=32)
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--slots", type=int, default=16)
    s.add_argument("--threads", type=int, default=2)
    s.set_defaults(func=speed)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
