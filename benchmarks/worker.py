"""One engine in one process, in one of two modes.

`python -m benchmarks.worker SPEC.json RESULT.json` runs one job ("quality": perplexity and greedy continuations)
and writes its result. `python -m benchmarks.worker --serve SPEC.json FD` loads the engine, then runs workloads one
at a time as interleave.py asks: a JSON line on stdin ({"workload": name} or {"finish": true}), a JSON line of
reply on the inherited file descriptor FD (stdout and stderr are the engine's, and go to the log).
Every result carries the load time (imports excluded), the process's resident memory before and after the load,
and its peak (VmHWM). A crash becomes {"status": "failed", "error": one line}. Only the engine's own modules are
imported, so the memory figures are the engine's.
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


def load(spec: dict):
    """(the engine, the load figures). Adapters are modules under benchmarks.engines, or dotted module paths."""
    name = spec["adapter"] if "." in spec["adapter"] else f"benchmarks.engines.{spec['adapter']}"
    adapter = importlib.import_module(name)
    adapter.import_modules()  # imports are not part of the load time
    before = rss_mb()
    start = time.perf_counter()
    engine = adapter.load(spec)
    return engine, {
        "status": "ok",
        "load_seconds": time.perf_counter() - start,
        "rss_before_load_mb": before,
        "rss_after_load_mb": rss_mb(),
    }


def run(spec: dict) -> dict:
    from . import workloads

    engine, result = load(spec)
    result["quality"] = workloads.quality(engine, spec["inputs"], spec["settings"])
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def serve(spec: dict, replies) -> None:
    """Load, say so, then answer one command per stdin line until {"finish": true} or the end of stdin."""
    from . import seq2seq_workloads, workloads

    registry = seq2seq_workloads.WORKLOADS if spec["job"] == "seq2seq" else workloads.SPEED
    engine, loaded = load(spec)
    _reply(replies, loaded)
    for line in sys.stdin:
        command = json.loads(line)
        if command.get("finish"):
            _reply(replies, {"status": "ok", "peak_rss_mb": peak_rss_mb()})
            return
        workload = registry[command["workload"]]
        refusal = workload.refusal(engine)
        _reply(replies, refusal or {"status": "ok", "value": workload.once(engine, spec["inputs"], spec["settings"])})


def _reply(replies, message: dict) -> None:
    replies.write(json.dumps(message) + "\n")
    replies.flush()


def error_line(exc: BaseException) -> str:
    """`Type: first line of the message`, at most 300 characters: a failure as the report shows it. (Not the
    runtime's errors.first_line: this module must not import memgpt_runtime, to keep its workers' memory their own.)"""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def _failure(exc: Exception) -> dict:
    traceback.print_exc()
    return {"status": "failed", "error": error_line(exc)}


def main(argv: list[str]) -> int:
    serving = argv[:1] == ["--serve"]
    spec_path, target = argv[1:] if serving else argv
    with open(spec_path) as f:
        spec = json.load(f)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(spec["threads"])
    if serving:
        with os.fdopen(int(target), "w") as replies:
            try:
                serve(spec, replies)
            except Exception as exc:  # reported as this engine's failure; the suite goes on
                _reply(replies, _failure(exc))
                return 1
        return 0
    try:
        result = run(spec)
    except Exception as exc:  # reported as this engine's failure; the suite goes on
        result = _failure(exc)
    with open(target, "w") as f:
        json.dump(result, f)
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
