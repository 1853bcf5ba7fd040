"""One engine in one process: `python -m benchmarks.worker SPEC.json RESULT.json`.

Reads the spec (engine, job "speed", "quality" or "seq2seq", paths, threads, token ids, settings), loads the
engine, runs the job and writes the result, with the load time (imports excluded), the process's resident memory
before and after the load, and its peak (VmHWM). A crash becomes {"status": "failed", "error": one line}. Only the
engine's own modules are imported, so the memory figures are the engine's.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # the kernel reports kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def rss_mb() -> float:
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    """The process's peak resident size. subtle: not ru_maxrss, which Linux carries over from the parent
    across fork + exec, so every worker would report at least the suite's own peak; VmHWM starts afresh."""
    return _status_mb("VmHWM")


def run(spec: dict) -> dict:
    from . import seq2seq_workloads, workloads

    adapter = importlib.import_module(f"benchmarks.engines.{spec['adapter']}")
    adapter.import_modules()  # imports are not part of the load time
    before = rss_mb()
    start = time.perf_counter()
    engine = adapter.load(spec)
    result = {"status": "ok", "load_seconds": time.perf_counter() - start, "rss_before_load_mb": before,
              "rss_after_load_mb": rss_mb()}  # fmt: skip
    if spec["job"] == "quality":
        result["quality"] = workloads.quality(engine, spec["inputs"], spec["settings"])
    else:
        result["workloads"] = {}
        registry = seq2seq_workloads.WORKLOADS if spec["job"] == "seq2seq" else workloads.SPEED
        for name in spec["workloads"]:
            began = time.perf_counter()
            result["workloads"][name] = registry[name](engine, spec["inputs"], spec["settings"])
            print(f"{name} done in {time.perf_counter() - began:.1f}s", flush=True)  # progress, in the worker log
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def main(argv: list[str]) -> int:
    spec_path, result_path = argv
    with open(spec_path) as f:
        spec = json.load(f)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(spec["threads"])
    try:
        result = run(spec)
    except Exception as exc:  # reported as this engine's failure; the suite goes on
        traceback.print_exc()
        lines = str(exc).strip().splitlines()
        result = {"status": "failed", "error": f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]}
    with open(result_path, "w") as f:
        json.dump(result, f)
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
