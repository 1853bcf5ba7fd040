"""Session-scoped fixtures: tiny random models saved as HF folders, and their exports, built once per session.

Tiny folders: `tiny_llama_dir` (GQA, tied head, like SmolLM2), `tiny_qwen2_dir`, `tiny_gpt2_dir`.
Tiny exports: `tiny_llama_export` (fp32), `tiny_llama_int8`, `tiny_llama_int4`, `tiny_gpt2_export`,
`tiny_qwen2_export` (fp32). Slow (real default model, for `@pytest.mark.slow` tests): `smollm2_fp32_export`,
`smollm2_int8_export`, `smollm2_int4_export`. Nothing here touches the network. Other test files rely on these names: keep them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import memgpt_runtime as mr
from benchmarks import tiny_models
from server_process import KEY, NAME, ServerProcess

sys.path.insert(0, str(Path(__file__).parent))  # so tests can import their helpers (torch_state, tiny_families, ...)


def _export(source, folder: Path, quantize: str = "fp32") -> Path:
    from export import export_model
    from export.progress import Progress

    return export_model(str(source), output=folder, quantize=quantize, progress=Progress(quiet=True))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    return tiny_models.build_tiny_llama(tmp_path_factory.mktemp("hf") / "tiny-llama", tied=True)


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory) -> Path:
    return tiny_models.build_tiny_qwen2(tmp_path_factory.mktemp("hf") / "tiny-qwen2")


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    return tiny_models.build_tiny_gpt2(tmp_path_factory.mktemp("hf") / "tiny-gpt2")


@pytest.fixture(scope="session")
def tiny_llama_export(tiny_llama_dir, tmp_path_factory) -> Path:
    return _export(tiny_llama_dir, tmp_path_factory.mktemp("export") / "tiny-llama-fp32")


@pytest.fixture(scope="session")
def tiny_llama_int8(tiny_llama_dir, tmp_path_factory) -> Path:
    return _export(tiny_llama_dir, tmp_path_factory.mktemp("export") / "tiny-llama-int8", "int8")


@pytest.fixture(scope="session")
def tiny_llama_int4(tiny_llama_dir, tmp_path_factory) -> Path:
    return _export(tiny_llama_dir, tmp_path_factory.mktemp("export") / "tiny-llama-int4", "int4")


@pytest.fixture(scope="session")
def tiny_gpt2_export(tiny_gpt2_dir, tmp_path_factory) -> Path:
    return _export(tiny_gpt2_dir, tmp_path_factory.mktemp("export") / "tiny-gpt2-fp32")


@pytest.fixture(scope="session")
def tiny_qwen2_export(tiny_qwen2_dir, tmp_path_factory) -> Path:
    return _export(tiny_qwen2_dir, tmp_path_factory.mktemp("export") / "tiny-qwen2-fp32")


@pytest.fixture(scope="session")
def smollm2_fp32_export(tmp_path_factory) -> Path:
    from export import export_model
    from export.progress import Progress

    return export_model(None, output=tmp_path_factory.mktemp("export") / "smollm2-fp32", progress=Progress(quiet=True))


@pytest.fixture(scope="session")
def smollm2_int8_export(tmp_path_factory) -> Path:
    from export import export_model
    from export.progress import Progress

    folder = tmp_path_factory.mktemp("export") / "smollm2-int8"
    return export_model(None, output=folder, quantize="int8", progress=Progress(quiet=True))


@pytest.fixture(scope="session")
def smollm2_int4_export(tmp_path_factory) -> Path:
    from export import export_model
    from export.progress import Progress

    folder = tmp_path_factory.mktemp("export") / "smollm2-int4"
    return export_model(None, output=folder, quantize="int4", progress=Progress(quiet=True))


# Encoder-decoder models (issue #6): tiny T5, BART and Marian folders, their fp32 exports, and two quantized ones.


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory) -> Path:
    return tiny_models.build_tiny_t5(tmp_path_factory.mktemp("hf") / "tiny-t5")


@pytest.fixture(scope="session")
def tiny_bart_dir(tmp_path_factory) -> Path:
    return tiny_models.build_tiny_bart(tmp_path_factory.mktemp("hf") / "tiny-bart")


@pytest.fixture(scope="session")
def tiny_marian_dir(tmp_path_factory) -> Path:
    return tiny_models.build_tiny_marian(tmp_path_factory.mktemp("hf") / "tiny-marian")


@pytest.fixture(scope="session")
def tiny_t5_export(tiny_t5_dir, tmp_path_factory) -> Path:
    return _export(tiny_t5_dir, tmp_path_factory.mktemp("export") / "tiny-t5-fp32")


@pytest.fixture(scope="session")
def tiny_bart_export(tiny_bart_dir, tmp_path_factory) -> Path:
    return _export(tiny_bart_dir, tmp_path_factory.mktemp("export") / "tiny-bart-fp32")


@pytest.fixture(scope="session")
def tiny_marian_export(tiny_marian_dir, tmp_path_factory) -> Path:
    return _export(tiny_marian_dir, tmp_path_factory.mktemp("export") / "tiny-marian-fp32")


@pytest.fixture(scope="session")
def tiny_bart_int8(tiny_bart_dir, tmp_path_factory) -> Path:
    return _export(tiny_bart_dir, tmp_path_factory.mktemp("export") / "tiny-bart-int8", "int8")


@pytest.fixture(scope="session")
def tiny_t5_int4(tiny_t5_dir, tmp_path_factory) -> Path:
    return _export(tiny_t5_dir, tmp_path_factory.mktemp("export") / "tiny-t5-int4", "int4")


# -- the tiny model served by a real `memgpt serve` process (test_server*.py) --


@pytest.fixture(scope="module")
def server(tiny_llama_export, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "server.log"
    proc = ServerProcess(tiny_llama_export, "--model-name", NAME, "--max-batch", "12", api_key=KEY, log=log)
    try:
        statuses = proc.wait_healthy()
        assert set(statuses) <= {200, 503}, statuses
        yield proc
    finally:
        assert proc.stop() == 0, proc.output()


@pytest.fixture(scope="module")
def lm(tiny_llama_export):
    return mr.load(tiny_llama_export)


@pytest.fixture(scope="module")
def client(server):
    return server.client()
