"""What one prompt-lookup check of n positions costs on a fused graph, against a decode step, and where it goes.

    .venv/bin/python tools/verify_cost.py FOLDER [FOLDER...] [--n 1,2,4,8,11,16] [--reps 30] [--rounds 3]
        [--profile] [--threads 2]

After a 400-token prompt on one row, times (medians of REPS, ROUNDS rounds with the folders and the sizes taking
turns): `step`, the decode step lookup's plain rounds take (beside a scratch row when the session's `min_rows` is
2); `verify n`, `SlotCache.verify` of n positions (n = 1 is one position of one row, the run a `verify` would be);
`run n`, the `run_with_iobinding` inside it alone; `verify n + step`, a check and the step after it (what a
rejected draft then a plain round pay, rebinding included). `--cpu-time` counts the process's CPU time instead of
wall time, with onnxruntime's idle workers sleeping rather than spinning (steadier on a loaded machine). With `--profile`, onnxruntime's per-node profile of
`verify n` for each n, summed by operator type (ms per run), the LM head apart.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort

import memgpt_runtime as mr
from memgpt_runtime.session import make_session_options

TEXT = Path(__file__).parent.parent / "benchmarks/data/english.txt"


CLOCK = time.perf_counter


def prepared(folder: str, threads: int, profile_prefix: str | None = None, no_spin: bool = False):
    lm = mr.load(folder, threads=threads)
    if profile_prefix or no_spin:
        options = make_session_options(threads)
        if profile_prefix:
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        if no_spin:  # idle workers sleep: the process's CPU time is then the work done
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        path = str(lm.folder / lm.manifest.model_file)
        lm.session.session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
    ids = lm.tokenizer.encode(TEXT.read_text(encoding="utf-8"))[:400]
    state = lm.session.new_state(1, 1024)
    state.prefill(np.array([ids]), np.ones((1, len(ids)), np.int64))
    return lm, state


def run_one(slots, n: int) -> None:
    """One run of n positions in slot 0, the way `verify` makes it (n = 1 included), then its rewind."""
    held = int(slots.lengths[0])
    slots._seqlens[0] = held + n - 1
    slots._total[...] = held + n
    slots._last[0] = slots._all_positions
    if slots._every.shape[0] < n:
        slots._every = np.empty((n, slots._every.shape[1]), np.float32)
    slots._run(0, 1, np.full((1, n), 5, np.int64), slots._seqlens[0:1], slots._last[0:1], slots._every[:n])


def timings(state, sizes: list[int], reps: int) -> dict[str, float]:
    """Medians in ms; every rep times each case once, the cases taking turns (fairer on a loaded machine)."""
    slots = state._slots
    cases = {"step": (lambda: state.step(np.array([5])), lambda: state.rewind(1))}
    for n in sizes:
        if n >= 2:
            cases[f"verify {n}"] = (lambda n=n: state.verify(np.full((1, n), 5)), lambda n=n: state.rewind(n))
            cases[f"verify {n} + step"] = (
                lambda n=n: (state.verify(np.full((1, n), 5)), state.step(np.array([5]))),
                lambda n=n: state.rewind(n + 1),
            )
        else:
            cases[f"verify {n}"] = (lambda n=n: run_one(slots, n), lambda: None)
        cases[f"run {n}"] = (  # the session run alone, its inputs bound by a run before it
            lambda n=n: slots._session.run_with_iobinding(slots._binding_for("run", 0, 1)[0]),
            lambda: None,
        )
    times = {key: [] for key in cases}
    for r in range(reps):
        for key in cases if r % 2 == 0 else list(cases)[::-1]:
            if key.startswith("run "):
                run_one(slots, int(key.split()[1]))
            fn, undo = cases[key]
            t = CLOCK()
            fn()
            times[key].append(CLOCK() - t)
            undo()
    return {key: float(np.median(v)) * 1e3 for key, v in times.items()}


def profile(folder: str, sizes: list[int], reps: int, threads: int) -> dict[int, dict[str, float]]:
    lm, state = prepared(folder, threads, "/tmp/verify-cost-profile")
    slots = state._slots
    for n in sizes:  # warm-up
        run_one(slots, n)
    marks = []
    for r in range(reps):  # the sizes take turns, the decode step ("step") among them
        for n in ["step", *sizes] if r % 2 == 0 else [*sizes[::-1], "step"]:
            if n == "step":
                state.step(np.array([5]))
                state.rewind(1)
            else:
                run_one(slots, n)
            marks.append(n)
    with open(lm.session.session.end_profiling()) as f:
        trace = json.load(f)
    runs = [e for e in trace if e.get("cat") == "Session" and e["name"] == "model_run"][-len(marks) :]
    per = {n: defaultdict(float) for n in ["step", *sizes]}
    nodes = [e for e in trace if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    i = 0
    for run, n in zip(runs, marks):
        start, end = run["ts"], run["ts"] + run["dur"]
        per[n]["(session run)"] += run["dur"] / reps / 1e3
        while i < len(nodes) and nodes[i]["ts"] < start:
            i += 1
        while i < len(nodes) and nodes[i]["ts"] <= end:
            e = nodes[i]
            op = e["args"]["op_name"]
            if e["name"].startswith("lm_head"):
                op = "MatMulNBits (LM head)"
            per[n][op] += e["dur"] / reps / 1e3
            i += 1
    return per


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+")
    parser.add_argument("--n", default="1,2,4,8,11,16")
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time the process's CPU time with onnxruntime's workers not spinning: steadier than wall time on a "
        "loaded machine, blind to how the work splits over the threads",
    )
    args = parser.parse_args()
    sizes = [int(x) for x in args.n.split(",")]
    if args.cpu_time:
        global CLOCK
        CLOCK = time.process_time
    states = {f: prepared(f, args.threads, no_spin=args.cpu_time)[1] for f in args.folders} if args.rounds else {}
    results = {f: defaultdict(list) for f in args.folders}
    for r in range(args.rounds):
        for folder in args.folders if r % 2 == 0 else args.folders[::-1]:
            for key, value in timings(states[folder], sizes if r % 2 == 0 else sizes[::-1], args.reps).items():
                results[folder][key].append(value)
    for folder, table in results.items() if args.rounds else ():
        step = np.median(table["step"])
        print(f"{folder}: step {step:.2f} ms (rounds: {', '.join(f'{x:.2f}' for x in table['step'])})")
        for n in sizes:
            line = f"  n={n:2d}: verify {np.median(table[f'verify {n}']):6.2f} ms = {np.median(table[f'verify {n}']) / step:4.2f} steps"
            line += f", run {np.median(table[f'run {n}']):6.2f} ms"
            if n >= 2:
                both = np.median(table[f"verify {n} + step"])
                line += f", verify + step {both:6.2f} ms = {both / step:4.2f} steps"
            print(line)
    if args.profile:
        for folder in args.folders:
            per = profile(folder, sizes, args.reps, args.threads)
            ops = sorted({op for d in per.values() for op in d}, key=lambda op: -per[sizes[-1]].get(op, 0))
            columns = ["step", *sizes]
            print(f"\n{folder}: kernel ms per run by operator (onnxruntime profile, {args.reps} runs each)")
            print("| operator | " + " | ".join(f"n={n}" if n != "step" else "step" for n in columns) + " |")
            print("|---|" + "---:|" * len(columns))
            for op in ops:
                print(f"| {op} | " + " | ".join(f"{per[n].get(op, 0):.3f}" for n in columns) + " |")


if __name__ == "__main__":
    main()
