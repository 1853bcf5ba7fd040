"""The engines the suite compares, one adapter module each, all behind the same small interface.

An adapter module has `import_modules()` (the heavy imports, kept out of the load time) and
`load(spec) -> engine`; an engine has
`generate(rows, new_tokens, beams=1, on_token=None) -> list[list[int]]` (greedy or beam search, exactly
`new_tokens` new ids per row, end of sequence banned; `on_token()` is called as each token of a single greedy
row is chosen) and `nll(ids) -> np.ndarray` (the negative log-likelihood of ids[1:], one per token).
`beam_search` and `batching` say whether the engine can do workloads (c) and (d).
This file only names the engines and says which are installed; adapters are imported by the worker.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class EngineSpec:
    name: str  # as shown in tables: "memgpt int8"
    adapter: str  # module under benchmarks.engines
    precision: str  # "fp32" | "int8" | "int4" | "q4_1" (the default model's GGUF file) | "q4_0" (its requantization)
    needs: tuple[str, ...]  # importable modules the adapter needs


ENGINES = [
    EngineSpec("pytorch fp32", "torch_engine", "fp32", ("torch", "transformers")),
    EngineSpec("memgpt fp32", "memgpt_engine", "fp32", ("onnxruntime",)),
    EngineSpec("memgpt int8", "memgpt_engine", "int8", ("onnxruntime",)),
    EngineSpec("memgpt int4", "memgpt_engine", "int4", ("onnxruntime",)),
    EngineSpec("optimum fp32", "optimum_engine", "fp32", ("optimum.onnxruntime", "torch")),
    EngineSpec("genai fp32", "genai_engine", "fp32", ("onnxruntime_genai",)),
    EngineSpec("genai int8", "genai_engine", "int8", ("onnxruntime_genai",)),
    EngineSpec("genai int4", "genai_engine", "int4", ("onnxruntime_genai",)),
    EngineSpec("llama.cpp q4_1", "llamacpp_engine", "q4_1", ("llama_cpp",)),
    EngineSpec("llama.cpp q4_0", "llamacpp_engine", "q4_0", ("llama_cpp",)),
]
BASELINE = "pytorch fp32"


def by_name(name: str) -> EngineSpec:
    for spec in ENGINES:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown engine {name!r}; known: {', '.join(s.name for s in ENGINES)}")


def missing_module(spec: EngineSpec) -> str | None:
    """The first module the engine needs that is not installed, or None (found, not imported)."""
    for module in spec.needs:
        try:
            if importlib.util.find_spec(module) is None:
                return module
        except ModuleNotFoundError:  # the parent package is missing
            return module
    return None
