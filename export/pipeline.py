"""The export pipeline, read top to bottom: check output → load → export ONNX → validate → quantize → save.

Each step is a function in its own module; this file only orders them, times them and stages the output
so that nothing appears under the target name unless every step succeeded.
(Shape borrowed from OpenNMT/CTranslate2 `converters/converter.py`, `Converter.convert`.)
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from .architectures import model_shape
from .manifest_builder import build_manifest
from .onnx_graph import export_graph, move_fp32_graph, save_onnx
from .output_folder import check_output_folder, staging_folder
from .progress import Progress
from .quantize import check_scheme, fp32_description, quantize_graph
from .sources import load_model, resolve_source
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
    target = check_output_folder(output, force)
    source = resolve_source(model)
    with staging_folder(target) as staging:
        work = staging / WORK_SUBDIR
        with progress.step(f"load {source.name}"):
            loaded = load_model(source)
            shape = model_shape(loaded.config)
        with progress.step("export to ONNX"):
            fp32_path, decoder, method = export_graph(loaded.model, shape, work)
        with progress.step("validate fp32 graph against PyTorch"):
            cases = validation_cases(loaded.tokenizer, decoder.vocab_size, shape.context_length)
            references = torch_reference(loaded.model, cases)
            validation: dict[str, Any] = {"fp32": validate_fp32(fp32_path, decoder, cases, references)}
        if scheme == "fp32":
            model_file, quantization = move_fp32_graph(fp32_path, staging), fp32_description()
        else:
            with progress.step(f"quantize to {scheme}"):
                model_file, quantization = _quantize_and_save(fp32_path, scheme, staging)
            with progress.step(f"measure {scheme} graph against PyTorch"):
                validation[scheme] = measure_quantized(staging / model_file, decoder, cases, references)
        with progress.step("save tokenizer and manifest"):
            tokenizer_file = write_tokenizer(loaded.tokenizer, staging)
            manifest = build_manifest(loaded, shape, decoder, model_file, tokenizer_file, quantization, validation)
            manifest.extra["graph"] = method  # "fused" (built here) or "optimum" (traced)
            manifest.write(staging)
            shutil.rmtree(work)
    progress.say(f"wrote {target}")
    return target


def _quantize_and_save(fp32_path: Path, scheme: str, folder: Path) -> tuple[str, dict[str, Any]]:
    import onnx

    proto, quantization = quantize_graph(onnx.load(str(fp32_path)), scheme)
    return save_onnx(proto, folder), quantization
