"""Where a decode step's time goes: onnxruntime's per-node profile of greedy decoding, summed by operator type.

Usage: .venv/bin/python benchmarks/experiments/profile_step.py FOLDER [STEPS]
Runs the benchmark's chat prompt, then STEPS (default 128) greedy steps on 2 threads with onnxruntime profiling
on, and prints per decode step: the wall time of the whole step (Python included), the time inside
`session.run`, and each operator type's share (kernel time summed over its nodes). The prefill is left out.
"""
import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import memgpt_runtime as mr
from memgpt_runtime import session as session_module
from benchmarks import prompts, suite

folder, steps = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 128
plain = session_module.make_session_options


def profiled(threads=None):
    options = plain(threads)
    options.enable_profiling = True
    options.profile_file_prefix = "/tmp/memgpt-step-profile"
    return options


session_module.make_session_options = profiled
lm = mr.load(folder, threads=2)
ids = prompts.make_inputs(lm.tokenizer, suite.DEFAULT_SETTINGS)["chat"]
lm.generate([ids], max_new_tokens=8, min_new_tokens=8)  # warm-up
stamps = []
for event in lm.generate_steps([ids], max_new_tokens=steps, min_new_tokens=steps):
    if isinstance(event, mr.Step):
        stamps.append(time.perf_counter())
trace = json.load(open(lm.session.session.end_profiling()))

runs = [e for e in trace if e.get("cat") == "Session" and e["name"] == "model_run"]
decode_runs = runs[-(steps - 1):]  # the last generation's steps after its prefill
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
print(f"{folder}: {n} decode steps; wall {wall:.3f} ms/step, session.run {inside:.3f} ms, kernels {kernels:.3f} ms, "
      f"outside the session {wall - inside:.3f} ms")
for op, total in sorted(by_type.items(), key=lambda kv: -kv[1]):
    print(f"  {op:36s} {total / n / 1e3:7.3f} ms  {100 * total / sum(by_type.values()):5.1f}%")
print("  MatMulNBits by projection:")
for role, total in sorted(by_role.items(), key=lambda kv: -kv[1]):
    print(f"    {role:34s} {total / n / 1e3:7.3f} ms")
