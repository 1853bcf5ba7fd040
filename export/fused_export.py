"""The streamed export of a fused-graph family: read the checkpoint tensor by tensor and write the graph one
layer at a time, validated against PyTorch, never holding more than a layer of weights.

Read as the steps it takes (each a function below; `pipeline.py` calls `export_fused`):
  fp32: write the fp32 graph -> check it against PyTorch (whole, or a truncated copy; reference.py) -> [measure
        it against a bf16 PyTorch model when the fp32 one is too large].
  int8/int4: write a draft graph (fp32 when the whole fp32 model is validated anyway, else int8) -> check the fp32
        graph -> [int4: sample the calibration text from the draft] -> write the quantized graph layer by layer
        (int4: each layer's statistics measured just before its weights are quantized, draft_calibration.py) ->
        measure it against PyTorch.
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

from .families import DecoderRecipe, recipe_for
from .fused_graph import FloatPrecision, FusedDecoder
from .graph_builder import ExternalStore, GraphBuilder
from .draft_calibration import LayerCalibration, sample_text
from .manifest_builder import build_manifest
from .onnx_graph import EXTERNAL_DATA_FILE, MODEL_FILE, DecoderGraph
from .progress import Progress
from .quantize import fp32_description
from .reference import LayerSubset, ValidationPlan, model_from_weights, plan_validation, truncated_config, whole_model
from .sources import LoadedModel
from .stream_quantize import QuantizedPrecision
from .tokenizer_file import write_tokenizer
from .validate import Case, measure_quantized, torch_logits, validate_fp32, validation_cases
from .weights import CachedLayer, Weights

PROGRESS_LINES = 8  # per-layer progress lines of the longest step
INLINE_LIMIT = 2**30  # bytes of weights up to which the graph is one file, as before streaming (SmolLM2-135M fp32: 0.5 GB)


def export_fused(loaded: LoadedModel, weights: Weights, scheme: str, staging: Path, work: Path,
                 progress: Progress) -> Manifest:  # fmt: skip
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
            validation["fp32"] = {**check_truncated(loaded, recipe, weights, plan, cases, work), **plan.describe()}
    text, calibration, precision = None, None, None
    if scheme == "fp32":
        with progress.step("write fp32 graph"):
            path, decoder = write_graph(recipe, weights, work / "final", FloatPrecision())
        if plan.fp32_graph == "whole":
            with progress.step("validate fp32 graph against PyTorch"):
                validation["fp32"] = {**validate_fp32(path, decoder, cases, references()), **plan.describe()}
    else:
        draft = "fp32" if plan.fp32_graph == "whole" else "int8"
        if plan.fp32_graph == "whole" or scheme == "int4":
            with progress.step(f"write {draft} draft graph"):
                writer = FloatPrecision() if draft == "fp32" else QuantizedPrecision("int8")
                draft_path, draft_decoder = write_graph(recipe, weights, work / "draft", writer)
            if plan.fp32_graph == "whole":
                with progress.step("validate fp32 graph against PyTorch"):
                    report = validate_fp32(draft_path, draft_decoder, cases, references())
                    validation["fp32"] = {**report, **plan.describe()}
            if scheme == "int4":
                with progress.step(f"sample calibration text from the {draft} graph"):
                    text, calibration = sample_text(draft_path, draft)
            shutil.rmtree(draft_path.parent)
        with progress.step(f"quantize to {scheme} layer by layer"):
            path, decoder, precision = write_quantized(recipe, weights, work / "final", scheme, text, progress)
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


def write_graph(recipe: DecoderRecipe, weights: Weights, folder: Path, precision: Any,
                layers: list[int] | None = None) -> tuple[Path, DecoderGraph]:  # fmt: skip
    """Write the whole graph with `precision` into folder/model.onnx (+ .data); weights streamed to disk."""
    folder.mkdir(parents=True, exist_ok=True)
    store = ExternalStore(folder / EXTERNAL_DATA_FILE)
    g = GraphBuilder("memgpt-fused-decoder", store)
    decoder = FusedDecoder(recipe, weights, g, precision)
    ids = decoder.embed()
    for layer in layers if layers is not None else range(recipe.num_layers):
        decoder.layer(layer)
    last, _ = decoder.head()
    return _save(g, store, folder), decoder.decoder_graph(ids, last)


def write_quantized(recipe: DecoderRecipe, weights: Weights, folder: Path, scheme: str, text: np.ndarray | None,
                    progress: Progress | None = None) -> tuple[Path, DecoderGraph, QuantizedPrecision]:  # fmt: skip
    """The int8/int4 graph, layer by layer; int4 measures each layer's inputs on `text` just before writing it."""
    folder.mkdir(parents=True, exist_ok=True)
    store = ExternalStore(folder / EXTERNAL_DATA_FILE)
    g = GraphBuilder("memgpt-fused-decoder", store)
    cached = CachedLayer(weights)  # a layer's weights read once for its calibration and its codes
    precision = QuantizedPrecision(scheme)
    decoder = FusedDecoder(recipe, cached, g, precision)
    calibration = LayerCalibration(recipe, weights, text) if text is not None else None
    ids = decoder.embed()
    for layer in range(recipe.num_layers):
        if calibration is not None:
            precision.importance.update(calibration.layer(layer, layer))
        decoder.layer(layer)
        cached.forget()
        gc.collect()
        if progress is not None and (layer + 1) % max(1, recipe.num_layers // PROGRESS_LINES) == 0:
            progress.say(f"  layer {layer + 1}/{recipe.num_layers}")
    if calibration is not None:
        precision.head_gram = calibration.head_gram()
    last, _ = decoder.head()
    return _save(g, store, folder), decoder.decoder_graph(ids, last), precision


def _save(g: GraphBuilder, store: ExternalStore, folder: Path) -> Path:
    """folder/model.onnx; its weights stay in model.onnx.data unless they are small enough to inline."""
    import onnx

    store.close()
    path = folder / MODEL_FILE
    proto = g.model()
    onnx.save_model(proto, str(path))
    if store.bytes <= INLINE_LIMIT:
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


def whole_references(loaded: LoadedModel, weights: Weights, plan: ValidationPlan, cases: list[Case]) -> list[np.ndarray]:
    """PyTorch logits of every case from the whole model in the plan's dtype (the model is freed after)."""
    import torch

    if plan.reference == "float32":
        return _logits_and_free(whole_model(loaded.source, torch.float32), cases)
    return _logits_and_free(model_from_weights(loaded.config, weights, torch.bfloat16), cases)


def check_truncated(loaded: LoadedModel, recipe: DecoderRecipe, weights: Weights, plan: ValidationPlan,
                    cases: list[Case], work: Path) -> dict[str, Any]:  # fmt: skip
    """The fp32 graph of the first and last layers against the same truncated model in PyTorch fp32."""
    config = truncated_config(loaded.config, plan.layers)
    subset = LayerSubset(weights, plan.layers)
    references = _logits_and_free(model_from_weights(config, subset), cases)
    path, decoder = write_graph(recipe_for(config), subset, work / "truncated-fp32", FloatPrecision())
    report = validate_fp32(path, decoder, cases, references)
    shutil.rmtree(path.parent)
    return report


def measure_truncated(loaded: LoadedModel, weights: Weights, plan: ValidationPlan, cases: list[Case], scheme: str,
                      text: np.ndarray | None, work: Path) -> dict[str, Any]:  # fmt: skip
    """The export's precision on the truncated copy (int4 calibrated on the whole model's text) against PyTorch."""
    config = truncated_config(loaded.config, plan.layers)
    subset = LayerSubset(weights, plan.layers)
    references = _logits_and_free(model_from_weights(config, subset), cases)
    small = recipe_for(config)
    if scheme == "fp32":
        path, decoder = write_graph(small, subset, work / "truncated", FloatPrecision())
    else:
        path, decoder, _ = write_quantized(small, subset, work / "truncated", scheme, text)
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
