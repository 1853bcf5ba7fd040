"""Where a decode step's time goes: onnxruntime's per-node profile of greedy decoding, summed by operator type.

    .venv/bin/python tools/profile_step.py FOLDER [--steps 128] [--threads 2] [--trace-prefix /tmp/memgpt-step-profile]

Runs the benchmark's chat prompt, then STEPS greedy steps with onnxruntime profiling on, and prints per decode
step: the wall time of the whole step (Python included), the time inside `session.run`, and each operator
type's share (kernel time summed over its nodes). The prefill is left out.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import defaultdict

import onnxruntime as ort

import memgpt_runtime as mr
from benchmarks import prompts, suite
from memgpt_runtime.session import make_session_options


def profiled(lm, threads: int, prefix: str) -> None:
    """Swap the model's ONNX Runtime session for one over the same file with profiling on."""
    options = make_session_options(threads)
    options.enable_profiling = True
    options.profile_file_prefix = prefix
    path = str(lm.folder / lm.manifest.model_file)
    lm.session.session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--trace-prefix", default="/tmp/memgpt-step-profile")
    args = parser.parse_args()
    steps = args.steps
    lm = mr.load(args.folder, threads=args.threads)
    profiled(lm, args.threads, args.trace_prefix)
    ids = prompts.make_inputs(lm.tokenizer, suite.DEFAULT_SETTINGS)["chat"]
    lm.generate([ids], max_new_tokens=8, min_new_tokens=8)  # warm-up
    stamps = []
    for event in lm.generate_steps([ids], max_new_tokens=steps, min_new_tokens=steps):
        if isinstance(event, mr.Step):
            stamps.append(time.perf_counter())
    with open(lm.session.session.end_profiling()) as f:
        trace = json.load(f)

    runs = [e for e in trace if e.get("cat") == "Session" and e["name"] == "model_run"]
    decode_runs = runs[-(steps - 1) :]  # the last generation's steps after its prefill
    start = decode_runs[0]["ts"]
    by_type, by_role = defaultdict(float), defaultdict(float)
    for e in trace:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= start:
            by_type[e["args"]["op_name"]] += e["dur"]
            if e["args"]["op_name"] == "MatMulNBits":  # by projection: the node name without its layer number
                by_role[re.sub(r"\d+", "N", e["name"][: -len("_kernel_time")])] += e["dur"]
    n = len(decode_runs)
    wall = (stamps[-1] - stamps[0]) / (len(stamps) - 1) * 1e3
    inside = sum(r["dur"] for r in decode_runs) / n / 1e3
    kernels = sum(by_type.values()) / n / 1e3
    print(
        f"{args.folder}: {n} decode steps; wall {wall:.3f} ms/step, session.run {inside:.3f} ms, "
        f"kernels {kernels:.3f} ms, outside the session {wall - inside:.3f} ms"
    )
    for op, total in sorted(by_type.items(), key=lambda kv: -kv[1]):
        print(f"  {op:36s} {total / n / 1e3:7.3f} ms  {100 * total / sum(by_type.values()):5.1f}%")
    print("  MatMulNBits by projection:")
    for role, total in sorted(by_role.items(), key=lambda kv: -kv[1]):
        print(f"    {role:34s} {total / n / 1e3:7.3f} ms")


if __name__ == "__main__":
    main()
