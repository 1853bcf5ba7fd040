"""Run the timed workloads of several engines with the engines taking turns, each in its own worker process.

Every engine keeps one worker (`python -m benchmarks.worker --serve`) alive for the whole timed part, loaded one
after another; then for each workload, round after round, every engine runs it once, never two at once, in an
order that reverses every round (A B C, C B A, ...). This machine's speed drifts by 10-25% over minutes, so an
engine-after-engine schedule can hand one engine a slow minute and its rival a fast one; taking turns spreads the
drift over all of them alike, and each engine's peak memory is still its own process's. Warmup rounds come first
and are not kept. A worker that fails or times out is reported with one line and leaves the rotation; the others
go on. Summarizing the measurements is the workloads' job (workloads.py, seq2seq_workloads.py).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import models

SETTLE_SECONDS = 0.25  # subtle: an engine's idle threads spin for a while after its run (OpenMP, ORT, ggml);
# a short pause keeps them from eating into the next engine's cores


def order(names: list[str], round_index: int) -> list[str]:
    """The engines' turn order in one round: as given in even rounds, reversed in odd ones."""
    return list(names) if round_index % 2 == 0 else list(reversed(names))


class Worker:
    """One engine's long-lived worker process: commands on its stdin, replies on a pipe of their own."""

    def __init__(self, spec: dict, log: Path, timeout: float):
        self.timeout, self.log = timeout, log
        self._spec_dir = tempfile.TemporaryDirectory()
        spec_path = Path(self._spec_dir.name) / "spec.json"
        spec_path.write_text(json.dumps(spec))
        read, write = os.pipe()
        self._replies, self._buffer = read, b""
        with open(log, "w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.worker", "--serve", str(spec_path), str(write)],
                cwd=models.REPO,
                env=worker_env(spec["threads"]),
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                pass_fds=(write,),
            )
        os.close(write)  # the child holds the write end now; its exit closes the pipe

    def call(self, command: dict | None) -> dict:
        """Send a command (None: just wait for the load's reply) and return the reply, or a failure."""
        if command is not None:
            try:
                self.process.stdin.write((json.dumps(command) + "\n").encode())
                self.process.stdin.flush()
            except BrokenPipeError:
                return self._failed()
        deadline = time.monotonic() + self.timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._replies], [], [], left)[0]:
                self.close()
                return {"status": "failed", "error": f"timed out after {self.timeout:.0f}s"}
            chunk = os.read(self._replies, 1 << 16)
            if not chunk:
                return self._failed()
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        reply = json.loads(line)
        if reply["status"] == "failed":
            self.close()
        return reply

    def _failed(self) -> dict:
        """The failure of a worker that exited: the last line it printed."""
        self.close()
        tail = [line for line in self.log.read_text(errors="replace").splitlines() if line.strip()]
        return {"status": "failed", "error": (tail[-1] if tail else "the worker exited without a reply")[:300]}

    def close(self, grace: float = 0.0) -> None:
        """Stop the process (after `grace` seconds to exit by itself) and free the pipes; once."""
        if self.closed:
            return
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdin:
            self.process.stdin.close()
        os.close(self._replies)
        self._spec_dir.cleanup()
        self._replies = -1

    @property
    def closed(self) -> bool:
        return self._replies == -1


def worker_env(threads: int) -> dict:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
        "TRANSFORMERS_VERBOSITY": "error",
        "HF_HUB_OFFLINE": "1",
    }
    env["PYTHONPATH"] = os.pathsep.join([str(models.REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def worker_log(log_dir: Path, engine: str, job: str) -> Path:
    """Where a worker of `engine` running `job` writes its output: worker-memgpt-int4-speed.log, say."""
    return log_dir / f"worker-{engine.replace(' ', '-').replace('.', '')}-{job}.log"


def run(specs: dict[str, dict], registry: dict, names: list[str], settings: dict, log_dir: Path, say) -> dict:
    """{engine name: its result}: the load figures, {"workloads": {name: figures}} and the peak memory, or a
    failure. `specs` maps engine names to worker specs; `registry` maps workload names to Workloads."""
    results: dict[str, dict] = {}
    workers: dict[str, Worker] = {}
    for name, spec in specs.items():
        say(f"{name}: loading ...")
        worker = Worker(spec, worker_log(log_dir, name, spec["job"]), settings["timeout"])
        loaded = worker.call(None)
        results[name] = {**loaded, "workloads": {}} if loaded["status"] == "ok" else loaded
        if loaded["status"] == "ok":
            workers[name] = worker
    for workload_name in names:
        workload = registry[workload_name]
        rounds = settings["warmup"] + settings["repeats"] if workload.repeated else 1
        kept_from = rounds - settings["repeats"] if workload.repeated else 0
        runs: dict[str, list] = {name: [] for name in workers}
        say(f"{workload_name}: {rounds} rounds over {len(workers)} engines ...")
        for r in range(rounds):
            for name in order(list(runs), r):  # a failed or refusing engine has left `runs`
                reply = workers[name].call({"workload": workload_name})
                if reply["status"] == "failed":
                    results[name] = {"status": "failed", "error": f"{workload_name}: {reply['error']}"}
                    del runs[name]
                elif reply["status"] == "n/a":
                    results[name]["workloads"][workload_name] = reply
                    del runs[name]
                elif r >= kept_from:
                    runs[name].append(reply["value"])
                time.sleep(SETTLE_SECONDS)
        for name, measurements in runs.items():
            results[name]["workloads"][workload_name] = workload.summarize(
                measurements, specs[name]["inputs"], settings
            )
        workers = {n: w for n, w in workers.items() if not w.closed}
    for name, worker in workers.items():
        finished = worker.call({"finish": True})
        if finished["status"] == "ok":
            results[name]["peak_rss_mb"] = finished["peak_rss_mb"]
            worker.close(grace=30)
        else:
            results[name] = finished
    return results
