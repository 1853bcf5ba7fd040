"""Run a suite: build (or reuse) the model folders, run every engine in its own workers, collect one result dict.

Every engine gets the same threads and the same token ids. The timed workloads (a)-(e) run in one "speed" worker
per engine, all kept alive, the engines taking turns workload by workload and round by round (interleave.py), never
two at once. Then each engine alone runs a "quality" process (perplexity + greedy continuations), so the speed
process's peak memory is not the quality job's. Agreement with PyTorch is computed here from the continuations.
Writing the outputs is report.py's job.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from . import interleave, models, prompts, workloads
from .engines import BASELINE, ENGINES, EngineSpec, missing_module
from .models import BuildError
from .worker import error_line

DEFAULT_SETTINGS = {
    "model": "default",
    "repeats": 3,
    "warmup": 1,
    "prefill_tokens": 512,
    "decode_new": 128,
    "beams": 4,
    "beam_new": 64,
    "batch_size": 8,
    "batch_new": 64,
    "steps_new": 512,
    "agreement_new": 128,
    "agreement_prompts": 5,
    "ppl_tokens": None,
    "timeout": 1200,
}
QUICK_SETTINGS = {
    **DEFAULT_SETTINGS,
    "model": "tiny",
    "prefill_tokens": 64,
    "decode_new": 16,
    "beam_new": 8,
    "batch_size": 4,
    "batch_new": 8,
    "steps_new": 32,
    "agreement_new": 16,
    "agreement_prompts": 3,
    "ppl_tokens": 128,
    "timeout": 300,
}
MODEL_NAMES = {"default": "SmolLM2-135M-Instruct", "tiny": "tiny random Llama (benchmarks/tiny_models.py)"}
SPEED_WORKLOADS = ["prefill", "greedy", "beam", "batch", "steps"]
INSTALL_HINTS = {"llama_cpp": "pip install llama-cpp-python", "onnxruntime_genai": "pip install onnxruntime-genai"}


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def run_suite(
    settings: dict,
    threads: int,
    cache: Path,
    engines: list[EngineSpec] | None = None,
    quality: bool = True,
    log_dir: Path | None = None,
) -> dict:
    """The decoder-only suite's result; BenchError (exit code 1) when the memgpt fp32 folder, whose tokenizer
    makes every engine's inputs, cannot be built."""
    engines = engines or ENGINES
    began = time.perf_counter()
    cache = cache / settings["model"]
    cache.mkdir(parents=True, exist_ok=True)
    log_dir = log_dir or cache
    try:
        fp32 = build_folder(
            cache,
            "memgpt-fp32",
            lambda: models.build_memgpt(settings["model"], _hf(cache, settings), cache / "memgpt-fp32", "fp32"),
        )
    except BuildError as exc:
        from .errors import BenchError

        raise BenchError(
            f"cannot build the memgpt fp32 model, which tokenizes every prompt: {exc}", exit_code=1
        ) from None
    import memgpt_runtime as mr

    lm = mr.load(fp32, threads=threads)
    inputs = prompts.make_inputs(lm.tokenizer, settings)
    base_spec = {
        "threads": threads,
        "settings": settings,
        "inputs": inputs,
        "pad_id": lm.manifest.tokens.pad_token_id,
        "eos_ids": list(lm.manifest.tokens.eos_token_ids),
        "context": lm.manifest.context_length,
        "free_pad_id": prompts.free_token_id(inputs, lm.manifest.vocab_size),
    }
    results, runnable = plan(engines, base_spec, lambda engine: _artifact(engine, settings, cache, log_dir))
    build_seconds = time.perf_counter() - began
    say(f"models ready in {build_seconds:.0f}s; running {len(runnable)} engines with {threads} threads")
    timed_began = time.perf_counter()
    speed_specs = {engine.name: {**spec, "job": "speed"} for engine, spec in runnable}
    speed = interleave.run(speed_specs, workloads.SPEED, SPEED_WORKLOADS, settings, log_dir, say)
    for engine, spec in runnable:
        entry = {**results[engine.name], **speed[engine.name]}
        if quality and entry["status"] == "ok":
            say(f"{engine.name}: quality ...")
            q = run_worker({**spec, "job": "quality"}, settings["timeout"], log_dir, engine)
            entry["quality"] = (
                q.get("quality") if q["status"] == "ok" else {"status": "failed", "error": q.get("error")}
            )
        results[engine.name] = entry
    add_agreement(results)
    return {
        "model": MODEL_NAMES[settings["model"]],
        "settings": settings,
        **header(threads),
        "inputs": {k: (len(v) if k in ("prefill", "chat", "text") else [len(r) for r in v]) for k, v in inputs.items()},
        "build_seconds": round(build_seconds, 1),
        "run_seconds": round(time.perf_counter() - timed_began, 1),
        "engines": results,
    }


def header(threads: int) -> dict:
    """What every result starts with, whichever parts ran: threads, baseline, machine."""
    return {
        "threads": threads,
        "baseline": BASELINE,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "cpu": cpu_summary(),
            "python": platform.python_version(),
        },
    }


# the instruction sets onnxruntime's int8 and 4-bit kernels choose between: two hosts that differ here differ in
# every quantized engine's speed (benchmarks/RESULTS.md)
INT8_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_summary(cpuinfo: str | None = None) -> str:
    """ "MODEL NAME; avx2, avx512_vnni" from /proc/cpuinfo: the CPU and which of INT8_FEATURES it has ("" if unknown)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return ""
    fields = dict(line.split(":", 1) for line in cpuinfo.splitlines()[:40] if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set(fields.get("flags", "").split())
    present = [name for name in INT8_FEATURES if name in flags]
    return f"{fields.get('model name', 'unknown CPU')}; {', '.join(present) or 'none of ' + '/'.join(INT8_FEATURES)}"


def _hf(cache: Path, settings: dict) -> Path:
    return models.build_hf(settings["model"], cache / "hf")


class Skipped(Exception):
    """The engine does not apply to this model; the message says why."""


def plan(
    engines: list[EngineSpec], base_spec: dict, artifact: Callable[[EngineSpec], dict[str, str]]
) -> tuple[dict[str, dict], list[tuple[EngineSpec, dict]]]:
    """Each engine's first result ("skipped", "failed", or "pending" with its size on disk), and the worker spec of
    each engine that can run. `artifact(engine)` gives the paths its worker loads ({"folder" or "gguf",
    "model_path"}), or raises Skipped or models.BuildError."""
    results: dict[str, dict] = {}
    runnable: list[tuple[EngineSpec, dict]] = []
    for engine in engines:
        missing = missing_module(engine)
        if missing:
            results[engine.name] = {
                "status": "skipped",
                "reason": f"not installed ({INSTALL_HINTS.get(missing, missing)})",
            }
            continue
        try:
            paths = artifact(engine)
        except Skipped as exc:
            results[engine.name] = {"status": "skipped", "reason": str(exc)}
            continue
        except BuildError as exc:
            results[engine.name] = {"status": "failed", "error": str(exc)}
            continue
        size = models.weights_size_mb(Path(paths["model_path"]))
        results[engine.name] = {"status": "pending", "precision": engine.precision, "size_mb": size}
        runnable.append((engine, {**base_spec, "adapter": engine.adapter, "precision": engine.precision, **paths}))
    return results, runnable


def build_folder(cache: Path, name: str, build: Callable[[], Path]) -> Path:
    """The built folder; BuildError with the one-line error of its build."""
    if not (cache / name).exists():
        say(f"building {name} (once; cached in {cache}) ...")
    try:
        with warnings.catch_warnings():  # the ONNX exporters' tracer warnings would bury the progress lines
            warnings.simplefilter("ignore")
            return Path(build())
    except Exception as exc:
        raise BuildError(f"could not build {name}: {error_line(exc)}"[:300]) from None


def _artifact(engine: EngineSpec, settings: dict, cache: Path, log_dir: Path) -> dict[str, str]:
    """The paths the engine's worker needs ({"folder"/"gguf", "model_path"}); Skipped when the engine does not
    apply to this model, BuildError when its folder cannot be built."""
    model = settings["model"]
    if engine.adapter == "llamacpp_engine":
        shipped = models.default_gguf() if model == "default" else None
        if shipped is None:
            raise Skipped(
                "no GGUF file for this model" if model != "default" else "the default model's GGUF is not installed"
            )
        gguf = shipped  # Q4_1; other formats are llama.cpp's requantizations of it
        if engine.precision != "q4_1":
            name, log = f"llamacpp-{engine.precision}.gguf", log_dir / "llamacpp-quantize.log"
            gguf = build_folder(
                cache, name, lambda: models.requantize_gguf(shipped, cache / name, engine.precision, log)
            )
        return {"gguf": str(gguf), "model_path": str(gguf)}
    if engine.adapter == "torch_engine":
        built = build_folder(cache, "hf", lambda: _hf(cache, settings))
    elif engine.adapter == "memgpt_engine":
        name = f"memgpt-{engine.precision}"
        built = build_folder(
            cache, name, lambda: models.build_memgpt(model, _hf(cache, settings), cache / name, engine.precision)
        )
    elif engine.adapter == "optimum_engine":
        built = build_folder(cache, "optimum", lambda: models.build_optimum(_hf(cache, settings), cache / "optimum"))
    elif engine.adapter == "genai_engine":
        name = f"genai-{engine.precision}"
        log = log_dir / "genai-build.log"
        built = build_folder(
            cache, name, lambda: models.build_genai(_hf(cache, settings), cache / name, engine.precision, log)
        )
    else:
        raise BuildError(f"unknown adapter {engine.adapter}")
    return {"folder": str(built), "model_path": str(built)}


def run_worker(spec: dict, timeout: float, log_dir: Path, engine: EngineSpec) -> dict:
    """Run one worker process for one job; its result, or a failure with the last line it printed."""
    env = interleave.worker_env(spec["threads"])
    log = interleave.worker_log(log_dir, engine.name, spec["job"])
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, result_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps(spec))
        try:
            with open(log, "w") as out:
                subprocess.run(
                    [sys.executable, "-m", "benchmarks.worker", str(spec_path), str(result_path)],
                    cwd=models.REPO,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=timeout,
                )
        except subprocess.TimeoutExpired:
            return {"status": "failed", "error": f"timed out after {timeout:.0f}s"}
        if result_path.is_file():
            return json.loads(result_path.read_text())
    tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return {"status": "failed", "error": (tail[-1] if tail else "the worker exited without a result")[:300]}


def add_agreement(results: dict) -> None:
    """Greedy agreement with the baseline, per engine: the share of positions before the first divergence
    (mean over prompts), and the share of identical positions."""
    base = (results.get(BASELINE, {}).get("quality") or {}).get("continuations")
    for entry in results.values():
        ours = (entry.get("quality") or {}).get("continuations")
        if not base or not ours:
            continue
        prefix, same = [], []
        for a, b in zip(base, ours):
            n = len(a)
            first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(n, len(b)))
            prefix.append(first / n)
            same.append(sum(x == y for x, y in zip(a, b)) / n)
        entry["quality"]["agreement_prefix"] = sum(prefix) / len(prefix)
        entry["quality"]["agreement_positions"] = sum(same) / len(same)
