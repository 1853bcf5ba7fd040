"""The export pipeline, read top to bottom: check output → load → export ONNX → validate → quantize → save.

Each step is a function in its own module; this file only orders them, times them and stages the output
so that nothing appears under the target name unless every step succeeded. A decoder-only model becomes one
graph (`model.onnx`); an encoder-decoder model (T5, BART, Marian) becomes its decoder (`model.onnx`) and its
encoder (`encoder.onnx`), validated and quantized together. The manifest is written last, once the scratch
space is gone, with the size and SHA-256 of every other file of the folder.
(Shape borrowed from OpenNMT/CTranslate2 `converters/converter.py`, `Converter.convert`.)
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from memgpt_runtime.integrity import record_files
from memgpt_runtime.manifest import Manifest

from .architectures import Architecture, ModelShape, architecture_for
from .every_position import with_every_position
from .fused_export import export_fused, streamed_weights
from .gguf_quantize import ROWS, check_gguf_source, fallback_line, quantize_gguf
from .graph_spec import DecoderGraph
from .hub import reach_hub
from .kernel_warmup import compile_kernels
from .manifest_builder import build_manifest, token_spec
from .onnx_graph import MODEL_FILE, export_onnx, move_fp32_graph, read_decoder_graph, save_onnx
from .output_folder import check_output_folder, staging_folder
from .progress import Progress
from .quantize import check_scheme, fp32_description, quantize_graph
from .seq2seq_graph import ENCODER_FILE, export_seq2seq_graphs
from .seq2seq_validate import measure_seq2seq, seq2seq_cases, seq2seq_torch_reference, validate_seq2seq_fp32
from .sources import LoadedModel, load_checkpoint, load_model, resolve_source
from .tokenizer_file import write_tokenizer
from .validate import measure_quantized, torch_reference, validate_fp32, validation_cases

WORK_SUBDIR = "_work"  # scratch space inside the staging folder (same filesystem), removed before the rename


def export_model(
    model: str | None = None,
    output: str | Path = "model",
    quantize: str = "fp32",
    force: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Export MODEL (None = the default SmolLM2, a hub id, a folder or a .gguf) to a runtime folder; return it."""
    progress = progress or Progress()
    scheme = check_scheme(quantize)
    source = resolve_source(model)
    check_gguf_source(scheme, source.gguf_file, source.name)
    target = check_output_folder(output, force, source.model_paths())
    if scheme != "fp32":
        compile_kernels()  # before anything is loaded: numba's compiler then never shares the export's memory
    source = reach_hub(source)
    with staging_folder(target) as staging:
        with progress.step(f"load {source.name}"):
            loaded = load_checkpoint(source)  # config and tokenizer; the weights are read below
            architecture = architecture_for(loaded.config)
            shape = architecture.shape(loaded.config)
            weights = streamed_weights(loaded, scheme)  # a fused-graph family read tensor by tensor, or None
            if weights is None:
                loaded = load_model(source)
        if weights is not None:
            manifest = export_fused(loaded, weights, scheme, staging, staging / WORK_SUBDIR, progress)
        else:
            steps = _encoder_decoder if architecture.kind == "encoder-decoder" else _decoder_only
            manifest = steps(loaded, architecture, shape, scheme, staging, progress)
        shutil.rmtree(staging / WORK_SUBDIR)
        manifest = with_every_position(staging, manifest)  # logits of every position on request (perplexity)
        with progress.step("checksum files and write manifest"):
            write_manifest(manifest, staging)
    progress.say(f"wrote {target}")
    return target


def write_manifest(manifest: Manifest, folder: Path) -> Path:
    """Write `manifest` into `folder`, recording every other file in it (so the folder must be final)."""
    return replace(manifest, files=record_files(folder)).write(folder)


def export_graph(model: Any, shape: ModelShape, workdir: Path, rows: bool = False) -> tuple[Path, DecoderGraph, str]:
    """The fp32 decoder graph of a loaded model: fused for the families of `families.py` (its stream as 2-D rows
    if `rows`), optimum's export for the rest; path, names, method. (A checkpoint the export can read tensor by
    tensor is streamed instead: `fused_export.py`.)"""
    from .families import recipe_for, recipe_refusal
    from .fused_graph import build_fused_graph
    from .weights import StateDictWeights

    if recipe_refusal(model.config) is None:
        proto, decoder = build_fused_graph(recipe_for(model.config), StateDictWeights(model), rows=rows)
        workdir.mkdir(parents=True, exist_ok=True)
        return workdir / save_onnx(proto, workdir), decoder, "fused"
    path = export_onnx(model, workdir)
    return path, read_decoder_graph(path, shape), "optimum"


def _decoder_only(
    loaded: LoadedModel, architecture: Architecture, shape: ModelShape, scheme: str, staging: Path, progress: Progress
) -> Manifest:
    work = staging / WORK_SUBDIR
    rows = scheme == "gguf" and ROWS  # 2-D rows give each GGUF minimum term one Gemm (gguf_quantize.py)
    with progress.step("export to ONNX"):
        fp32_path, decoder, method = export_graph(loaded.model, shape, work, rows=rows)
    with progress.step("validate fp32 graph against PyTorch"):
        cases = validation_cases(loaded.tokenizer, decoder.vocab_size, shape.context_length)
        references = torch_reference(loaded.model, cases)
        validation: dict[str, Any] = {"fp32": validate_fp32(fp32_path, decoder, cases, references)}
    if scheme == "fp32":
        model_file, quantization = move_fp32_graph(fp32_path, staging), fp32_description()
    else:
        with progress.step(f"quantize to {scheme}"):
            gguf = Path(loaded.source.load_from) / loaded.source.gguf_file if scheme == "gguf" else None
            rows = rows and method == "fused"
            model_file, quantization = _quantize_and_save(fp32_path, scheme, staging, gguf=gguf, rows=rows)
        if scheme == "gguf" and fallback_line(quantization):
            progress.say(fallback_line(quantization))
        with progress.step(f"measure {scheme} graph against PyTorch"):
            validation[scheme] = measure_quantized(staging / model_file, decoder, cases, references)
    with progress.step("save tokenizer"):
        tokenizer_file = write_tokenizer(loaded.tokenizer, staging)
    manifest = build_manifest(loaded, shape, decoder, model_file, tokenizer_file, quantization, validation)
    manifest.extra["graph"] = method  # "fused" (built here) or "optimum" (traced)
    return manifest


def _encoder_decoder(
    loaded: LoadedModel, architecture: Architecture, shape: ModelShape, scheme: str, staging: Path, progress: Progress
) -> Manifest:
    work = staging / WORK_SUBDIR
    with progress.step("export encoder and decoder to ONNX"):
        graphs = export_seq2seq_graphs(loaded.model, shape, architecture.cross_attention, work)
    with progress.step("validate fp32 graphs against PyTorch"):
        start = token_spec(loaded, encoder_decoder=True).decoder_start_token_id
        cases = seq2seq_cases(loaded.tokenizer, graphs.decoder.vocab_size, graphs.encoder.max_source_length, start)
        references = seq2seq_torch_reference(loaded.model, cases)
        validation: dict[str, Any] = {"fp32": validate_seq2seq_fp32(graphs, cases, references)}
    if scheme == "fp32":
        decoder_file = move_fp32_graph(graphs.decoder_path, staging, MODEL_FILE)
        encoder_file = move_fp32_graph(graphs.encoder_path, staging, ENCODER_FILE)
        quantization = fp32_description()
    else:
        with progress.step(f"quantize to {scheme}"):
            decoder_file, quantization = _quantize_and_save(graphs.decoder_path, scheme, staging)
            encoder_file, quantization["encoder"] = _quantize_and_save(
                graphs.encoder_path, scheme, staging, ENCODER_FILE
            )
            quantization["encoder"].pop("lm_head", None)  # the encoder has no LM head
        with progress.step(f"measure {scheme} graphs against PyTorch"):
            validation[scheme] = measure_seq2seq(
                staging / encoder_file, staging / decoder_file, graphs, cases, references
            )
    with progress.step("save tokenizer"):
        tokenizer_file = write_tokenizer(loaded.tokenizer, staging)
    manifest = build_manifest(
        loaded, shape, graphs.decoder, decoder_file, tokenizer_file, quantization, validation, encoder=graphs.encoder
    )
    manifest.extra["graph"] = "optimum"  # both graphs traced by optimum (the encoder extended here)
    return manifest


def _quantize_and_save(
    fp32_path: Path, scheme: str, folder: Path, name: str = MODEL_FILE, gguf: Path | None = None, rows: bool = False
) -> tuple[str, dict[str, Any]]:
    import onnx

    proto = onnx.load(str(fp32_path))
    proto, quantization = quantize_gguf(proto, gguf, two_d=rows) if scheme == "gguf" else quantize_graph(proto, scheme)
    return save_onnx(proto, folder, name), quantization
