"""Run the encoder-decoder part of the suite: a Marian translation model, PyTorch against memgpt fp32/int8/int4.

The model has random weights (fixed seed) at Helsinki-NLP/opus-mt-en-de's shape (models.build_marian), or with
--quick the tests' tiny Marian: the text is meaningless, the timings are real. As in suite.py, each engine has its
own worker (`python -m benchmarks.worker --serve`, job "seq2seq") with the same threads and the same source ids,
tokenized once by the memgpt fp32 folder's tokenizer, and the engines take turns (interleave.py); every engine
generates exactly `new_tokens` tokens (end of sequence banned until then). Each worker does the timed workloads
(seq2seq_workloads.py), then the untimed greedy continuations, compared here with PyTorch's. Only PyTorch and memgpt take part: the other
engines of the suite have no encoder-decoder path here. A failure to build the model makes the part "failed"
rather than stopping the suite. Writing the tables is report.py's job.
"""

from __future__ import annotations

import time
from pathlib import Path

from . import interleave, models, prompts, seq2seq_workloads
from .engines import BASELINE, EngineSpec
from .models import BuildError
from .suite import add_agreement, build_folder, plan, say

DEFAULT_SETTINGS = {
    "model": "marian",
    "repeats": 3,
    "warmup": 1,
    "new_tokens": 64,
    "beams": 4,
    "batch_size": 8,
    "agreement_sources": 4,
    "timeout": 1200,
}
QUICK_SETTINGS = {**DEFAULT_SETTINGS, "model": "tiny-marian", "new_tokens": 16, "timeout": 300}
MODEL_NAMES = {
    "marian": "Marian, random weights, opus-mt-en-de shape (d_model 512, 6 + 6 layers, 8 heads, FFN 2048, "
    "vocabulary 58101)",
    "tiny-marian": "tiny random Marian (benchmarks/tiny_models.py: d_model 64, 2 + 2 layers)",
}
ADAPTERS = ("torch_engine", "memgpt_engine")  # the engines with an encoder-decoder path
WORKLOADS = ["translate", "beam", "batch"]


def run_part(
    settings: dict,
    threads: int,
    cache: Path,
    engines: list[EngineSpec],
    quality: bool = True,
    log_dir: Path | None = None,
) -> dict:
    """The encoder-decoder part's result: {"model", "settings", "inputs", "engines", ...} or a failed status."""
    began = time.perf_counter()
    cache = cache / settings["model"]
    cache.mkdir(parents=True, exist_ok=True)
    log_dir = log_dir or cache
    part = {"model": MODEL_NAMES[settings["model"]], "settings": settings, "baseline": BASELINE}
    try:
        hf = build_folder(cache, "hf", lambda: models.build_hf(settings["model"], cache / "hf"))
        fp32 = _memgpt(settings, hf, cache, "fp32")
    except BuildError as exc:
        return {**part, "status": "failed", "error": str(exc)}
    import memgpt_runtime as mr

    lm = mr.load(fp32, threads=threads)
    inputs = prompts.make_seq2seq_inputs(lm.tokenizer, settings)
    base_spec = {
        "threads": threads,
        "settings": settings,
        "inputs": inputs,
        "pad_id": lm.manifest.tokens.pad_token_id,
        "eos_ids": list(lm.manifest.tokens.eos_token_ids),
        "job": "seq2seq",
    }

    def artifact(engine: EngineSpec) -> dict[str, str]:
        built = hf if engine.adapter == "torch_engine" else _memgpt(settings, hf, cache, engine.precision)
        return {"folder": str(built), "model_path": str(built)}

    results, runnable = plan([e for e in engines if e.adapter in ADAPTERS], base_spec, artifact)
    build_seconds = time.perf_counter() - began
    timed_began = time.perf_counter()
    say("encoder-decoder part ...")
    names = WORKLOADS + (["agreement"] if quality else [])
    ran = interleave.run(
        {engine.name: spec for engine, spec in runnable}, seq2seq_workloads.WORKLOADS, names, settings, log_dir, say
    )
    for engine, _ in runnable:
        entry = {**results[engine.name], **ran[engine.name]}
        continuations = (entry.get("workloads") or {}).pop("agreement", None)
        if continuations:
            entry["quality"] = continuations
        results[engine.name] = entry
    add_agreement(results)
    _add_identical(results)
    return {
        **part,
        "status": "ok",
        "inputs": {
            "source": len(inputs["source"]),
            "batch": [len(r) for r in inputs["batch"]],
            "agreement": [len(r) for r in inputs["agreement"]],
        },
        "build_seconds": round(build_seconds, 1),
        "run_seconds": round(time.perf_counter() - timed_began, 1),
        "engines": results,
    }


def _memgpt(settings: dict, hf: Path, cache: Path, precision: str) -> Path:
    """The memgpt folder of `precision`; BuildError with the one-line error of its build."""
    name = f"memgpt-{precision}"
    return build_folder(cache, name, lambda: models.build_memgpt(settings["model"], hf, cache / name, precision))


def _add_identical(results: dict) -> None:
    """How many agreement sources each engine continued exactly as the baseline did."""
    base = (results.get(BASELINE, {}).get("quality") or {}).get("continuations")
    for entry in results.values():
        ours = (entry.get("quality") or {}).get("continuations")
        if base and ours:
            entry["quality"]["identical"] = sum(a == b for a, b in zip(base, ours))
