"""Spec: `memgpt export FILE.gguf --quantize gguf` keeps every weight's GGUF codes and scales, exactly.

Each case writes a tiny Llama (rows of 256 and 512 weights) as a GGUF file in one mix of types with gguf's writer
(gguf_files.py), exports it with --quantize gguf, and checks the graph against transformers' dequantized model
of the same file: with float activations (MatMulNBits accuracy level 0) the logits agree to float rounding, which
only an exact copy of the weights can do; as exported (int8 activations, level 4) they stay close.
"""

from __future__ import annotations

import io
import shutil

import numpy as np
import onnx
import pytest

import gguf_files
from memgpt_runtime.errors import ExportError
from memgpt_runtime.manifest import read_manifest
from memgpt_runtime.scoring import sequence_logits
from memgpt_runtime.session import DecoderSession

TEXT = [0, 17, 91, 140, 260, 33, 5, 77, 301, 12, 250, 44, 123, 9, 380, 64]  # token ids of the tiny vocabulary


def _mix(embedding: str, layers: str, sixes: str | None = None):
    """GGUF types: the embedding, every layer weight, and (a Q4_K_M-like mix) attn_v/ffn_down of layer 0."""

    def types(role: str, layer: int | None) -> str:
        if role == "token_embd":
            return embedding
        if sixes and role in ("attn_v", "ffn_down") and layer == 0:
            return sixes
        return layers

    return types


MIXES = {  # name -> (types, the formats kept in its nodes, the embedding's bits)
    "q4_1": (_mix("Q8_0", "Q4_1"), {"Q4_1", "Q8_0"}, 8),  # the default model's mix
    "q4_0": (_mix("Q4_0", "Q4_0"), {"Q4_0"}, 4),
    "q8_0": (_mix("Q8_0", "Q8_0"), {"Q8_0"}, 8),
    "q5": (_mix("Q5_0", "Q5_1"), {"Q5_0", "Q5_1"}, 8),
    "q4_k_m": (_mix("Q6_K", "Q4_K", sixes="Q6_K"), {"Q4_K", "Q6_K"}, 8),
}


@pytest.fixture(scope="session")
def wide_llama_dir(tmp_path_factory):
    return gguf_files.build_wide_llama(tmp_path_factory.mktemp("hf") / "wide-llama")


@pytest.fixture(scope="session")
def gguf_exports(wide_llama_dir, tmp_path_factory):
    """name -> (GGUF file, its --quantize gguf export), written on first use."""
    from export import export_model
    from export.progress import Progress

    made = {}

    def get(name: str):
        if name not in made:
            folder = tmp_path_factory.mktemp("gguf")
            path = gguf_files.write_gguf(wide_llama_dir, folder / f"wide-{name}.gguf", MIXES[name][0])
            made[name] = (
                path,
                export_model(str(path), output=folder / "export", quantize="gguf", progress=Progress(quiet=True)),
            )
        return made[name]

    return get


def _dequantized_logits(gguf_path) -> np.ndarray:
    """transformers' model of the GGUF file (its weights dequantized): logits (1, len(TEXT), vocab)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([TEXT])).logits.numpy()


def _graph_logits(folder, tmp_path, accuracy_level: int | None = None, path=None) -> np.ndarray:
    """The export's logits (or those of the graph at `path`, with the export's names) at every position of TEXT;
    with its MatMulNBits at `accuracy_level` if given."""
    manifest = read_manifest(folder)
    path = path or folder / manifest.model_file
    if accuracy_level is not None:
        proto = onnx.load(str(path))
        for node in proto.graph.node:
            for attribute in node.attribute:
                if node.op_type == "MatMulNBits" and attribute.name == "accuracy_level":
                    attribute.i = accuracy_level
        tmp_path.mkdir(parents=True, exist_ok=True)
        path = tmp_path / "model.onnx"
        onnx.save(proto, str(path))
    session = DecoderSession(path, manifest.graph, manifest.kv_cache, manifest.vocab_size, manifest.context_length)
    return sequence_logits(session, manifest, TEXT)


@pytest.mark.parametrize("mix", sorted(MIXES))
def test_every_weight_keeps_the_files_codes(gguf_exports, mix):
    _, folder = gguf_exports(mix)
    q = read_manifest(folder).quantization
    assert (q["scheme"], q["fallback"]) == ("gguf", {})
    assert set(q["kept"]) == set(q["nodes"]) and len(q["nodes"]) == 2 * 4 + 1  # q|k|v, o, gate|up, down; the head
    assert {f["type"] for k in q["kept"].values() for f in k["formats"]} == MIXES[mix][1]
    assert q["embeddings"] == {"embed": MIXES[mix][2]}
    assert q["embeddings_kept"]["embed"]["gguf"] == ["token_embd.weight"]
    assert q["kept"]["lm_head"]["gguf"] == ["token_embd.weight"]  # the tied head reads the embedding's codes
    assert all(t["fallback_in"] == [] for t in q["gguf_tensors"].values())


@pytest.mark.parametrize("mix", sorted(MIXES))
def test_with_float_activations_the_graph_is_the_dequantized_model(gguf_exports, mix, tmp_path):
    path, folder = gguf_exports(mix)
    np.testing.assert_allclose(_graph_logits(folder, tmp_path, accuracy_level=0), _dequantized_logits(path), atol=2e-4)


@pytest.mark.parametrize("mix", sorted(MIXES))
def test_as_exported_int8_activations_stay_close_to_the_dequantized_model(gguf_exports, mix, tmp_path):
    path, folder = gguf_exports(mix)
    got, want = _graph_logits(folder, tmp_path), _dequantized_logits(path)
    assert np.abs(got - want).max() < 0.25
    assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.9
    validation = read_manifest(folder).validation
    assert validation["fp32"]["passed"] is True and validation["gguf"]["top1_agreement"] >= 0.9


def test_a_q4_k_m_mix_splits_q_k_v_by_format(gguf_exports):
    _, folder = gguf_exports("q4_k_m")
    kept = read_manifest(folder).quantization["kept"]
    assert [
        (f["type"], f["bits"], f["block_size"], f["zero_point"], f["minimums"])
        for f in kept["layers.0.qkv_proj"]["formats"]
    ] == [("Q4_K", 4, 32, 0, True), ("Q6_K", 8, 16, 32, False)]
    assert [f["type"] for f in kept["layers.1.qkv_proj"]["formats"]] == ["Q4_K"]
    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph
    assert [n.op_type for n in graph.node if n.name.startswith("layers.0.qkv_proj_gguf")] == [
        "MatMulNBits",
        "Split",
        "Gemm",
        "MatMulNBits",
        "Concat",
    ]


def test_formats_with_minimums_add_block_sums_times_minimums_in_one_gemm(gguf_exports):
    _, folder = gguf_exports("q4_1")
    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph
    nodes = [n for n in graph.node if n.name.startswith("layers.0.o_proj_gguf")]
    assert [n.op_type for n in nodes] == ["MatMulNBits", "Split", "Gemm"]
    nbits, split, gemm = nodes
    attrs = {a.name: a.i for a in nbits.attribute}
    assert (attrs["K"], attrs["N"], attrs["bits"], attrs["block_size"]) == (256, 256 + 256 // 32, 4, 32)
    codes, sums = split.output  # (rows, N) and (rows, K / block): the stream is 2-D rows
    assert list(gemm.input) == [sums, "layers.0.o_proj_gguf.minimums", codes] and not gemm.attribute
    minimums = next(t for t in graph.initializer if t.name == "layers.0.o_proj_gguf.minimums")
    assert list(minimums.dims) == [256 // 32, 256]  # (K / block, N)
    assert read_manifest(folder).quantization["minimum_nodes"] == "Split, Gemm"


@pytest.mark.parametrize("mix", ["q4_1", "q4_k_m"])
def test_the_rows_form_gives_the_logits_of_the_3d_form(gguf_exports, mix, tmp_path):
    """The export (2-D rows, Split + Gemm) against the same file's codes in a 3-D stream (Split, MatMul, Add)."""
    import torch
    from transformers import AutoModelForCausalLM

    from export.every_position import enable_every_position
    from export.families import recipe_for
    from export.fused_graph import build_fused_graph
    from export.gguf_quantize import quantize_gguf
    from export.weights import StateDictWeights

    path, folder = gguf_exports(mix)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    proto, _ = build_fused_graph(recipe_for(model.config), StateDictWeights(model))
    proto, description = quantize_gguf(proto, path)
    enable_every_position(proto)
    assert description["minimum_nodes"] == "Split, MatMul, Add"
    assert "Gemm" not in {n.op_type for n in proto.graph.node}
    three_d = tmp_path / "3d"
    three_d.mkdir()
    onnx.save(proto, str(three_d / "model.onnx"))
    for level in (None, 0):  # as exported (int8 activations), then with float activations
        rows = _graph_logits(folder, tmp_path / f"rows-{level}", level)
        other = _graph_logits(folder, tmp_path / f"3d-{level}", level, three_d / "model.onnx")
        np.testing.assert_allclose(rows, other, rtol=0, atol=1e-5)
    np.testing.assert_allclose(rows, _dequantized_logits(path), atol=2e-4)


def test_a_type_without_integer_codes_falls_back_to_int8_for_its_tensors_only(wide_llama_dir, tmp_path):
    from export import export_model
    from export.progress import Progress

    types = lambda role, layer: "F16" if role == "ffn_down" else "Q4_0"  # noqa: E731
    path = gguf_files.write_gguf(wide_llama_dir, tmp_path / "mixed.gguf", types)
    log = io.StringIO()
    folder = export_model(str(path), output=tmp_path / "out", quantize="gguf", progress=Progress(stream=log))
    q = read_manifest(folder).quantization
    assert q["fallback"] == {f"layers.{i}.down_proj": "int8: F16 has no exact integer-code form" for i in (0, 1)}
    assert q["bits_by_node"]["layers.0.down_proj"] == 8 and q["block_size_by_node"]["layers.0.down_proj"] == 64
    assert q["gguf_tensors"]["blk.0.ffn_down.weight"] == {
        "type": "F16",
        "kept_by": [],
        "fallback_in": ["layers.0.down_proj"],
    }
    assert set(q["kept"]) == set(q["nodes"]) - {"layers.0.down_proj", "layers.1.down_proj"}
    lines = [line for line in log.getvalue().splitlines() if "fall back" in line]
    assert lines == [
        "memgpt export: gguf: 2 weight(s) cannot keep the file's codes and fall back to int8: "
        "layers.0.down_proj (F16 has no exact integer-code form), "
        "layers.1.down_proj (F16 has no exact integer-code form)"
    ]


def test_gguf_scheme_refuses_a_model_that_is_not_a_gguf_file(tiny_llama_dir, tmp_path):
    from export import export_model

    with pytest.raises(ExportError, match="--quantize gguf keeps the codes of a .gguf file.*int8 or int4"):
        export_model(str(tiny_llama_dir), output=tmp_path / "out", quantize="gguf")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_default_model_keeps_its_q4_1_layers_and_q8_0_embedding(tmp_path_factory):
    from export import export_model
    from export.progress import Progress

    folder = export_model(
        None, output=tmp_path_factory.mktemp("export") / "smollm2-gguf", quantize="gguf", progress=Progress(quiet=True)
    )
    manifest = read_manifest(folder)
    q = manifest.quantization
    assert q["fallback"] == {} and set(q["kept"]) == set(q["nodes"]) and len(q["nodes"]) == 30 * 4 + 1
    assert q["algorithm"] == "kept from the GGUF file: Q4_1 (120 nodes), Q8_0 (1 nodes)"
    assert q["embeddings"] == {"embed": 8} and manifest.graph.all_positions == -1
    assert manifest.validation["gguf"]["top1_agreement"] >= 0.9
    shutil.rmtree(folder)
