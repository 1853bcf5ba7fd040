"""The streamed export of a fused-graph family: read the checkpoint tensor by tensor and write the graph one
layer at a time, validated against PyTorch, never holding more than a layer of weights.

Read as the steps it takes (each a function below; `pipeline.py` calls `export_fused`):
  fp32: write the fp32 graph -> check it against PyTorch (whole, or a truncated copy; reference.py) -> [measure
        it against a bf16 PyTorch model when the fp32 one is too large].
  int8/int4: write a draft graph (fp32 when the whole fp32 model is validated anyway, else int8) -> check the fp32
        graph -> [int4: sample the calibration text from the draft and measure every weight's input on it,
        draft_calibration.py] -> write the quantized graph layer by layer -> measure it against PyTorch.
The PyTorch logits are computed before any onnxruntime session opens and the model is freed, so the two never
share memory. Design and measurements: docs/streaming-export.md. This file writes no tokenizer or manifest
fields of its own beyond `validation`, `quantization` and `extra`.
"""

from __future__ import annotations

import gc
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from memgpt_runtime.manifest import Manifest

from .draft_calibration import calibrate_on_draft
from .families import DecoderRecipe, recipe_for
from .fused_graph import FloatPrecision, FusedDecoder
from .graph_builder import ExternalStore, GraphBuilder
from .manifest_builder import build_manifest
from .onnx_graph import EXTERNAL_DATA_FILE, MODEL_FILE, DecoderGraph
from .progress import Progress
from .quantize import fp32_description
from .reference import LayerSubset, ValidationPlan, model_from_weights, plan_validation, truncated_config, whole_model
from .sources import LoadedModel
from .stream_quantize import HEAD, QuantizedPrecision
from .tokenizer_file import write_tokenizer
from .validate import Case, measure_quantized, torch_logits, validate_fp32, validation_cases
from .weights import Weights

PROGRESS_LINES = 8  # per-layer progress lines of the longest step
INLINE_LIMIT = (
    2**30
)  # bytes of weights up to which the graph is one file, as before streaming (SmolLM2-135M fp32: 0.5 GB)


def export_fused(
    loaded: LoadedModel, weights: Weights, scheme: str, staging: Path, work: Path, progress: Progress
) -> Manifest:
    """Export a fused-graph family streamed from `weights` into `staging` (scratch in `work`); the manifest."""
    recipe = recipe_for(loaded.config)
    plan = plan_validation(weights, recipe.num_layers)
    work.mkdir(parents=True, exist_ok=True)
    cases = validation_cases(loaded.tokenizer, recipe.vocab_size, recipe.context_length)
    whole: list[np.ndarray] = []  # the whole model's PyTorch logits, computed once

    def references() -> list[np.ndarray]:
        if not whole:
            whole.extend(whole_references(loaded, weights, plan, cases))
        return whole

    validation: dict[str, Any] = {}
    if plan.fp32_graph == "truncated":
        with progress.step(f"validate the fp32 graph of layers {', '.join(map(str, plan.layers))} against PyTorch"):
            report = check_truncated(loaded, recipe, weights, plan, cases, work)
            validation["fp32"] = {**report, **plan.describe("fp32")}
    text, calibration, precision = None, None, None
    if scheme == "fp32":
        with progress.step("write fp32 graph"):
            path, decoder, _ = write_graph(recipe, weights, work / "final", FloatPrecision())
        if plan.fp32_graph == "whole":
            with progress.step("validate fp32 graph against PyTorch"):
                validation["fp32"] = {**validate_fp32(path, decoder, cases, references()), **plan.describe("fp32")}
    else:
        grams = None
        if plan.fp32_graph == "whole" or scheme == "int4":
            grams, calibration, text = draft_steps(
                recipe, weights, plan, scheme, work, cases, references, validation, progress
            )
        with progress.step(f"quantize to {scheme} layer by layer"):
            path, decoder, precision = write_quantized(recipe, weights, work / "final", scheme, grams, progress)
    if scheme != "fp32" or plan.fp32_graph == "truncated":
        with progress.step(f"measure {scheme} graph against PyTorch"):
            if plan.reference == "truncated":
                report = measure_truncated(loaded, weights, plan, cases, scheme, text, work)
            else:
                report = measure_quantized(path, decoder, cases, references())
            validation[scheme] = {**report, **plan.describe()}
    model_file = place(path, staging)
    quantization = fp32_description() if precision is None else precision.description(calibration)
    with progress.step("save tokenizer"):
        tokenizer_file = write_tokenizer(loaded.tokenizer, staging)
    manifest = build_manifest(loaded, _shape(recipe), decoder, model_file, tokenizer_file, quantization, validation)
    manifest.extra["graph"] = "fused"
    return manifest


def draft_steps(
    recipe: DecoderRecipe,
    weights: Weights,
    plan: ValidationPlan,
    scheme: str,
    work: Path,
    cases: list[Case],
    references: Any,
    validation: dict[str, Any],
    progress: Progress,
) -> tuple[dict[str, np.ndarray] | None, dict[str, Any] | None, np.ndarray | None]:
    """Write the draft graph, validate it when it is the whole fp32 graph (into `validation`), calibrate int4 on
    it, and delete it; returns int4's statistics, their note and the calibration text (None for int8)."""
    draft = draft_precision(weights, plan)
    with progress.step(f"write {draft} draft graph"):
        writer = FloatPrecision() if draft == "fp32" else QuantizedPrecision(draft, draft_bits=DRAFT_BITS[draft])
        path, decoder, inputs = write_graph(recipe, weights, work / "draft", writer, inline=False)
    if plan.fp32_graph == "whole":
        with progress.step("validate fp32 graph against PyTorch"):
            validation["fp32"] = {**validate_fp32(path, decoder, cases, references()), **plan.describe("fp32")}
    result: tuple[Any, Any, Any] = (None, None, None)
    if scheme == "int4":
        with progress.step(f"calibrate on text sampled from the {draft} graph"):
            result = calibrate_on_draft(path, decoder, inputs, (HEAD,), draft)
    shutil.rmtree(path.parent)
    return result


DRAFT_BITS = {"int8": 8, "int4": 4}
DRAFT_INT8_SHARE = 0.3  # of physical memory: an int8 draft up to this (Llama-3-8B's 8.5 GB is not; int4 then)


def draft_precision(weights: Weights, plan: ValidationPlan) -> str:
    """The graph the calibration text is sampled from: the fp32 graph when it is validated whole anyway; else
    round-to-nearest int8, or int4 when an int8 copy would not fit comfortably beside everything else."""
    from memgpt_runtime.session import physical_memory

    if plan.fp32_graph == "whole":
        return "fp32"
    return "int8" if weights.parameter_count() <= DRAFT_INT8_SHARE * physical_memory() else "int4"


def write_graph(
    recipe: DecoderRecipe, weights: Weights, folder: Path, precision: Any, inline: bool = True
) -> tuple[Path, DecoderGraph, dict[str, str]]:
    """Write the whole graph with `precision` into folder/model.onnx (+ .data); weights streamed to disk. Returns
    the path, the runtime's names, and each weight node's input tensor (what calibration measures)."""
    folder.mkdir(parents=True, exist_ok=True)
    store = ExternalStore(folder / EXTERNAL_DATA_FILE)
    g = GraphBuilder("memgpt-fused-decoder", store)
    decoder = FusedDecoder(recipe, weights, g, precision)
    ids = decoder.embed()
    for layer in range(recipe.num_layers):
        decoder.layer(layer)
    last, _ = decoder.head()
    return _save(g, store, folder, inline), decoder.decoder_graph(ids, last), decoder.linear_inputs


def write_quantized(
    recipe: DecoderRecipe,
    weights: Weights,
    folder: Path,
    scheme: str,
    grams: dict[str, np.ndarray] | None,
    progress: Progress | None = None,
) -> tuple[Path, DecoderGraph, QuantizedPrecision]:
    """The int8/int4 graph, layer by layer; int4 weighs each weight's rounding by `grams` (draft_calibration.py)."""
    folder.mkdir(parents=True, exist_ok=True)
    store = ExternalStore(folder / EXTERNAL_DATA_FILE)
    g = GraphBuilder("memgpt-fused-decoder", store)
    precision = QuantizedPrecision(scheme)
    if grams is not None:
        precision.importance = {name: gram for name, gram in grams.items() if name != HEAD}
        precision.head_gram = grams.get(HEAD)
    decoder = FusedDecoder(recipe, weights, g, precision)
    ids = decoder.embed()
    for layer in range(recipe.num_layers):
        decoder.layer(layer)  # its weights are freed as it returns (a full gc.collect() per layer cost ~0.3 s)
        if progress is not None and (layer + 1) % max(1, recipe.num_layers // PROGRESS_LINES) == 0:
            progress.say(f"  layer {layer + 1}/{recipe.num_layers}")
    last, _ = decoder.head()
    return _save(g, store, folder), decoder.decoder_graph(ids, last), precision


def _save(g: GraphBuilder, store: ExternalStore, folder: Path, inline: bool = True) -> Path:
    """folder/model.onnx; its weights stay in model.onnx.data unless `inline` and they are small enough."""
    import onnx

    store.close()
    path = folder / MODEL_FILE
    proto = g.model()
    onnx.save_model(proto, str(path))
    if inline and store.bytes <= INLINE_LIMIT:
        proto = onnx.load(str(path))  # reads the external data in
        (folder / EXTERNAL_DATA_FILE).unlink()
        onnx.save_model(proto, str(path))
    return path


def place(path: Path, staging: Path) -> str:
    """Move model.onnx (and its data file) from scratch into the output folder."""
    for file in (path, path.parent / EXTERNAL_DATA_FILE):
        if file.exists():
            shutil.move(str(file), str(staging / file.name))
    return path.name


def whole_references(
    loaded: LoadedModel, weights: Weights, plan: ValidationPlan, cases: list[Case]
) -> list[np.ndarray]:
    """PyTorch logits of every case from the whole model in the plan's dtype (the model is freed after)."""
    import torch

    if plan.reference == "float32":
        return _logits_and_free(whole_model(loaded.source, torch.float32), cases)
    return _logits_and_free(model_from_weights(loaded.config, weights, torch.bfloat16), cases)


def check_truncated(
    loaded: LoadedModel, recipe: DecoderRecipe, weights: Weights, plan: ValidationPlan, cases: list[Case], work: Path
) -> dict[str, Any]:
    """The fp32 graph of the first and last layers against the same truncated model in PyTorch fp32."""
    config = truncated_config(loaded.config, plan.layers)
    subset = LayerSubset(weights, plan.layers)
    references = _logits_and_free(model_from_weights(config, subset), cases)
    path, decoder, _ = write_graph(recipe_for(config), subset, work / "truncated-fp32", FloatPrecision())
    report = validate_fp32(path, decoder, cases, references)
    shutil.rmtree(path.parent)
    return report


def measure_truncated(
    loaded: LoadedModel,
    weights: Weights,
    plan: ValidationPlan,
    cases: list[Case],
    scheme: str,
    text: np.ndarray | None,
    work: Path,
) -> dict[str, Any]:
    """The export's precision on the truncated copy (int4 calibrated on the whole model's text) against PyTorch."""
    config = truncated_config(loaded.config, plan.layers)
    subset = LayerSubset(weights, plan.layers)
    references = _logits_and_free(model_from_weights(config, subset), cases)
    small = recipe_for(config)
    if scheme == "fp32":
        path, decoder, _ = write_graph(small, subset, work / "truncated", FloatPrecision())
    else:
        grams = None
        if scheme == "int4":  # calibrated on the text the whole model wrote, read by an int8 draft of the copy
            draft, draft_decoder, inputs = write_graph(
                small, subset, work / "truncated-draft", QuantizedPrecision("int8", draft_bits=8), inline=False
            )
            grams, _, _ = calibrate_on_draft(draft, draft_decoder, inputs, (HEAD,), "int8", text)
            shutil.rmtree(draft.parent)
        path, decoder, _ = write_quantized(small, subset, work / "truncated", scheme, grams)
    report = measure_quantized(path, decoder, cases, references)
    shutil.rmtree(path.parent)
    return report


def _logits_and_free(model: Any, cases: list[Case]) -> list[np.ndarray]:
    feeds = [dict(input_ids=c.input_ids, attention_mask=c.attention_mask, position_ids=c.position_ids) for c in cases]
    logits = torch_logits(model, feeds)
    del model
    gc.collect()
    return logits


def _shape(recipe: DecoderRecipe) -> Any:
    from .architectures import ModelShape

    return ModelShape(recipe.num_layers, recipe.kv_heads, recipe.head_size, recipe.context_length, recipe.vocab_size)


STREAMED_SCHEMES = ("fp32", "int8", "int4")


def streamed_weights(loaded: LoadedModel, scheme: str) -> Weights | None:
    """The checkpoint's weights read tensor by tensor when this export streams: a fused-graph family, a scheme
    written here, and weights in safetensors or GGUF files; None otherwise (the model is then loaded whole)."""
    from .families import recipe_refusal
    from .weights import weights_for

    if scheme not in STREAMED_SCHEMES or getattr(loaded.config, "is_encoder_decoder", False):
        return None
    if recipe_refusal(loaded.config) is not None:
        return None
    return weights_for(loaded.source, loaded.config)
