"""Spec: `memgpt export` of encoder-decoder models (T5, BART, Marian): two graphs, their manifest, their numbers.

The folder holds the decoder (`model.onnx`, optimum's decoder with past), the encoder (`encoder.onnx`, which
also returns every decoder layer's cross-attention keys and values), `tokenizer.json` and a manifest of kind
"encoder-decoder". All models are tiny and random (benchmarks/tiny_models.py); nothing touches the network.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer, BartConfig, MarianConfig, T5Config

from benchmarks import tiny_models as tm
from export import export_model
from export.architectures import model_shape, supported_model_types
from export.progress import Progress
from export.quantize import weight_matmuls
from memgpt_runtime.errors import ExportError
from memgpt_runtime.manifest import VERSION, EncoderSpec, GraphSpec, KVCacheSpec, TokenSpec, read_manifest

FOLDER = ["encoder.onnx", "manifest.json", "model.onnx", "tokenizer.json"]
CASES = {"one_source", "right_padded_batch"}
DECODER_GRAPH = GraphSpec(
    input_ids="input_ids",
    attention_mask=None,
    position_ids=None,
    logits="logits",
    encoder_attention_mask="encoder_attention_mask",
    cross_key="past_key_values.{i}.encoder.key",
    cross_value="past_key_values.{i}.encoder.value",
)


def _kv(heads: int, head_size: int) -> KVCacheSpec:
    return KVCacheSpec(
        layout="concat",
        num_layers=2,
        num_kv_heads=heads,
        head_size=head_size,
        past_key="past_key_values.{i}.decoder.key",
        past_value="past_key_values.{i}.decoder.value",
        present_key="present.{i}.decoder.key",
        present_value="present.{i}.decoder.value",
    )


def _encoder(heads: int, head_size: int, max_source_length: int) -> EncoderSpec:
    return EncoderSpec(
        model_file="encoder.onnx",
        input_ids="input_ids",
        attention_mask="attention_mask",
        cross_key="cross.{i}.key",
        cross_value="cross.{i}.value",
        num_layers=2,
        num_heads=heads,
        head_size=head_size,
        max_source_length=max_source_length,
    )


MARIAN_PAD = tm.MARIAN_PAD_ID  # the tiny Marian tokenizer's last id
EXPORTS = [  # fixture, architecture, heads, head size, context (= longest source), logits vocabulary
    ("tiny_t5_export", "t5", 4, 8, 512, tm.T5_VOCAB_SIZE),
    ("tiny_bart_export", "bart", 4, 16, 128, tm.VOCAB_SIZE),
    ("tiny_marian_export", "marian", 4, 16, 128, MARIAN_PAD + 1),
]


def _export(source, folder, quantize="fp32"):
    return export_model(str(source), output=folder, quantize=quantize, progress=Progress(quiet=True))


@pytest.mark.parametrize("export_fixture", [e[0] for e in EXPORTS])
def test_the_folder_holds_the_two_graphs_the_manifest_names(request, export_fixture):
    folder = request.getfixturevalue(export_fixture)
    assert sorted(p.name for p in folder.iterdir()) == FOLDER
    m = read_manifest(folder)
    assert (m.model_file, m.encoder.model_file, m.tokenizer_file) == ("model.onnx", "encoder.onnx", "tokenizer.json")
    enc = ort.InferenceSession(str(folder / "encoder.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in enc.get_inputs()] == ["input_ids", "attention_mask"]
    assert [o.name for o in enc.get_outputs()] == ["cross.0.key", "cross.0.value", "cross.1.key", "cross.1.value"]
    dec = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    layers = [
        f"past_key_values.{i}.{side}.{kind}"
        for i in range(2)
        for side in ("decoder", "encoder")
        for kind in ("key", "value")
    ]
    assert sorted(i.name for i in dec.get_inputs()) == sorted(["input_ids", "encoder_attention_mask", *layers])
    presents = [f"present.{i}.decoder.{kind}" for i in range(2) for kind in ("key", "value")]
    assert [o.name for o in dec.get_outputs()] == ["logits", *presents]


@pytest.mark.parametrize("export_fixture, architecture, heads, head_size, context, vocab", EXPORTS)
def test_manifest_says_encoder_decoder_with_the_graph_cache_and_encoder_specs(
    request, export_fixture, architecture, heads, head_size, context, vocab
):
    m = read_manifest(request.getfixturevalue(export_fixture))
    assert (m.format, m.version, m.kind, m.architecture) == (
        "memgpt-runtime-manifest",
        VERSION,
        "encoder-decoder",
        architecture,
    )
    assert m.graph == DECODER_GRAPH
    assert m.kv_cache == _kv(heads, head_size)
    assert m.encoder == _encoder(heads, head_size, context)
    assert (m.context_length, m.vocab_size) == (context, vocab)
    assert m.extra == {"graph": "optimum"}
    assert m.chat_template is None
    assert m.quantization == {"scheme": "fp32", "bits": 32, "block_size": None, "nodes": []}


@pytest.mark.parametrize(
    "export_fixture, tokens, defaults",
    [
        (
            "tiny_t5_export",
            TokenSpec(None, [tm.T5_EOS_ID], tm.T5_PAD_ID, decoder_start_token_id=tm.T5_PAD_ID),
            {"eos_token_id": [tm.T5_EOS_ID], "pad_token_id": tm.T5_PAD_ID, "decoder_start_token_id": tm.T5_PAD_ID},
        ),
        (
            "tiny_bart_export",
            TokenSpec(tm.BART_BOS_ID, [tm.BART_EOS_ID], tm.BART_PAD_ID, decoder_start_token_id=tm.BART_EOS_ID),
            {
                "max_length": 24,
                "min_length": 4,
                "early_stopping": True,
                "num_beams": 4,
                "length_penalty": 2.0,
                "no_repeat_ngram_size": 3,
                "forced_bos_token_id": tm.BART_BOS_ID,
                "forced_eos_token_id": tm.BART_EOS_ID,
                "pad_token_id": tm.BART_PAD_ID,
                "eos_token_id": [tm.BART_EOS_ID],
                "decoder_start_token_id": tm.BART_EOS_ID,
            },
        ),
        (
            "tiny_marian_export",
            TokenSpec(tm.MARIAN_EOS_ID, [tm.MARIAN_EOS_ID], MARIAN_PAD, decoder_start_token_id=MARIAN_PAD),
            {
                "max_length": 32,
                "num_beams": 4,
                "bad_words_ids": [[MARIAN_PAD]],
                "forced_eos_token_id": tm.MARIAN_EOS_ID,
                "pad_token_id": MARIAN_PAD,
                "eos_token_id": [tm.MARIAN_EOS_ID],
                "decoder_start_token_id": MARIAN_PAD,
            },
        ),
    ],
)
def test_manifest_carries_the_decoder_start_token_and_the_generation_config(request, export_fixture, tokens, defaults):
    m = read_manifest(request.getfixturevalue(export_fixture))
    assert m.tokens == tokens
    assert m.generation_defaults == defaults  # only what generation_config.json sets, in the runtime's names


@pytest.mark.parametrize(
    "export_fixture, source_fixture",
    [
        ("tiny_t5_export", "tiny_t5_dir"),
        ("tiny_bart_export", "tiny_bart_dir"),
        ("tiny_marian_export", "tiny_marian_dir"),
    ],
)
def test_tokenizer_json_encodes_sources_as_transformers_does(request, export_fixture, source_fixture):
    from tokenizers import Tokenizer

    folder, source = request.getfixturevalue(export_fixture), request.getfixturevalue(source_fixture)
    ours, theirs = Tokenizer.from_file(str(folder / "tokenizer.json")), AutoTokenizer.from_pretrained(source)
    for text in ["translate English to German: The house is wonderful.", "summarize: Hello world"]:
        assert ours.encode(text).ids == theirs(text)["input_ids"]


@pytest.mark.parametrize("export_fixture", [e[0] for e in EXPORTS])
def test_fp32_validation_of_encoder_and_decoder_steps_is_recorded_within_tolerance(request, export_fixture):
    report = read_manifest(request.getfixturevalue(export_fixture)).validation["fp32"]
    assert (report["passed"], report["tolerance"]) == (True, 1e-3)
    assert set(report["cases"]) == CASES
    assert 0 <= report["max_abs_diff"] <= 1e-3
    assert all(case["top1_agreement"] == 1.0 for case in report["cases"].values())


@pytest.mark.parametrize(
    "export_fixture, source_fixture",
    [
        ("tiny_t5_export", "tiny_t5_dir"),
        ("tiny_bart_export", "tiny_bart_dir"),
        ("tiny_marian_export", "tiny_marian_dir"),
    ],
)
def test_encoder_returns_the_cross_attention_keys_and_values_pytorch_caches(request, export_fixture, source_fixture):
    folder, source = request.getfixturevalue(export_fixture), request.getfixturevalue(source_fixture)
    m = read_manifest(folder)
    tokenizer = AutoTokenizer.from_pretrained(source)
    batch = tokenizer(
        ["translate English to German: The house is wonderful.", "Hello world"], padding=True, return_tensors="np"
    )  # right-padded, as these tokenizers pad
    assert batch["attention_mask"][1, -1] == 0
    ids, mask = batch["input_ids"].astype(np.int64), batch["attention_mask"].astype(np.int64)
    encoder = ort.InferenceSession(str(folder / m.encoder.model_file), providers=["CPUExecutionProvider"])
    got = encoder.run(None, {"input_ids": ids, "attention_mask": mask})  # cross.0.key, cross.0.value, ...
    model = AutoModelForSeq2SeqLM.from_pretrained(source).eval()
    start = torch.full((2, 1), m.tokens.decoder_start_token_id)
    with torch.no_grad():
        cache = model(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask),
            decoder_input_ids=start,
            use_cache=True,
        ).past_key_values.cross_attention_cache
    want = [t.numpy() for layer in cache.layers for t in (layer.keys, layer.values)]  # (batch, heads, src, head_size)
    assert [g.shape for g in got] == [w.shape for w in want] == [(2, 4, ids.shape[1], m.encoder.head_size)] * 4
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)  # values up to ~12


@pytest.mark.parametrize("export_fixture, scheme, bits", [("tiny_bart_int8", "int8", 8), ("tiny_t5_int4", "int4", 4)])
def test_quantized_exports_leave_no_float_weight_matmul_in_either_graph(request, export_fixture, scheme, bits):
    folder = request.getfixturevalue(export_fixture)
    m = read_manifest(folder)
    assert sorted(p.name for p in folder.iterdir()) == FOLDER
    for graph_file, q in ((m.model_file, m.quantization), (m.encoder.model_file, m.quantization["encoder"])):
        proto = onnx.load(str(folder / graph_file))
        assert weight_matmuls(proto) == []
        nbits = [n.name for n in proto.graph.node if n.op_type == "MatMulNBits"]
        assert len(nbits) == len(q["nodes"]) > 0
        assert (q["scheme"], q["bits"]) == (scheme, bits)
    cross = [n for n in m.quantization["encoder"]["nodes"] if n.startswith("/cross/")]
    assert cross == [f"/cross/layers.{i}/{kind}_proj/MatMul" for i in range(2) for kind in ("k", "v")]
    assert {m.quantization["encoder"]["bits_by_node"][n] for n in cross} == {8}  # attention inputs stay 8-bit
    assert "lm_head" not in m.quantization["encoder"]
    assert m.quantization["lm_head"]["bits"] == 8
    measured = m.validation[scheme]
    assert m.validation["fp32"]["passed"] is True
    assert set(measured["cases"]) == CASES
    # measured, not bounded: these untrained models amplify any weight rounding (PyTorch itself, run with the
    # same rounded int8 weights, moves its logits as far), so the figures say nothing about the quantizer here
    assert 0 < measured["max_abs_diff"] < np.inf and 0 <= measured["top1_agreement"] <= 1


def test_quantized_graphs_are_smaller(tiny_bart_export, tiny_bart_int8):
    for name in ("model.onnx", "encoder.onnx"):
        assert (tiny_bart_int8 / name).stat().st_size < (tiny_bart_export / name).stat().st_size


@pytest.mark.parametrize(
    "config, shape",
    [
        (T5Config(), (6, 8, 64, 512, 32128, 512)),  # t5-small
        (T5Config(d_model=512, d_kv=64, num_heads=6, num_layers=8, num_decoder_layers=8), (8, 6, 64, 512, 32128, 512)),
        (BartConfig(), (12, 16, 64, 1024, 50265, 1024)),  # bart-large
        (
            MarianConfig(
                d_model=512, decoder_layers=6, decoder_attention_heads=8, max_position_embeddings=512, vocab_size=58101
            ),
            (6, 8, 64, 512, 58101, 512),
        ),  # opus-mt-en-de
    ],
)
def test_registry_resolves_encoder_decoder_shapes(config, shape):
    s = model_shape(config)
    assert (s.num_layers, s.num_kv_heads, s.head_size, s.context_length, s.vocab_size, s.max_source_length) == shape


def test_an_unsupported_encoder_decoder_is_refused_with_the_supported_list(tmp_path):
    AutoConfig.for_model("pegasus").save_pretrained(tmp_path / "hf")
    supported = ", ".join(supported_model_types())
    assert "pegasus" not in supported
    with pytest.raises(
        ExportError, match=rf"^architecture 'pegasus' is not supported; supported model types: {supported}$"
    ):
        _export(tmp_path / "hf", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


def test_a_gguf_encoder_decoder_is_refused_before_loading(tmp_path):
    import gguf

    path = tmp_path / "t5-small.gguf"
    writer = gguf.GGUFWriter(str(path), "t5")
    writer.add_context_length(512)
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(
        ExportError,
        match=r"holds a t5 encoder-decoder model, and GGUF export supports decoder-only "
        r"models only; pass the model's Hugging Face folder or hub id instead$",
    ):
        _export(path, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t5-small.gguf"]


def test_a_failed_validation_leaves_no_half_written_folder(tiny_bart_dir, tmp_path, monkeypatch):
    import export.validate

    monkeypatch.setattr(export.validate, "FP32_TOLERANCE", 0.0)  # no real export is that exact
    with pytest.raises(ExportError, match=r"^the fp32 ONNX graph differs from PyTorch by .* \(tolerance 0\); "):
        _export(tiny_bart_dir, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []  # neither `out` nor its staging folder


def test_a_model_without_decoder_start_token_is_refused(tiny_t5_dir, tmp_path):
    import shutil

    source = tmp_path / "hf"
    shutil.copytree(tiny_t5_dir, source)
    for name in ("config.json", "generation_config.json"):
        body = json.loads((source / name).read_text())
        assert body.pop("decoder_start_token_id") == tm.T5_PAD_ID and "bos_token_id" not in body
        (source / name).write_text(json.dumps(body))
    with pytest.raises(
        ExportError,
        match=r"^the model declares no decoder_start_token_id nor bos_token_id "
        r"\(generation_config.json or config.json\); add one and retry$",
    ):
        _export(source, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


GERMAN_AND_ENGLISH = [
    "Die Straße ist lang, und der Garten hinter dem Haus ist groß.",
    "Hello world! Über den Fluss fährt eine Fähre.",
    "  spaces,\ttabs\nand Ω, a character no piece knows",
]


@pytest.mark.filterwarnings("ignore:Recommended.*sacremoses")
def test_a_marian_with_only_sentencepiece_files_is_converted_and_encodes_like_transformers(tmp_path):
    import sentencepiece
    from tokenizers import Tokenizer

    source = tm.build_tiny_marian(tmp_path / "opus-mt-tiny", sentencepiece=True)
    slow = AutoTokenizer.from_pretrained(source)
    assert type(slow).__name__ == "MarianTokenizer" and not (source / "tokenizer.json").exists()
    folder = _export(source, tmp_path / "out")
    m = read_manifest(folder)
    pad = len(slow) - 1
    assert (slow.pad_token_id, m.tokens.pad_token_id, m.tokens.decoder_start_token_id, m.vocab_size) == (
        pad,
        pad,
        pad,
        pad + 1,
    )
    assert m.generation_defaults["bad_words_ids"] == [[pad]]
    assert m.validation["fp32"]["passed"] is True
    ours = Tokenizer.from_file(str(folder / "tokenizer.json"))
    for text in GERMAN_AND_ENGLISH:
        assert ours.encode(text).ids == slow(text)["input_ids"]
    source_spm = sentencepiece.SentencePieceProcessor(model_file=str(source / "source.spm"))
    target_only = set(slow.encoder) - set(map(source_spm.id_to_piece, range(source_spm.get_piece_size()))) - {"<pad>"}
    assert len(target_only) >= 5  # kept, with their vocab.json ids, so that the runtime can decode them
    assert all(ours.id_to_token(slow.encoder[p]) == p for p in target_only)
    ids = slow("Die Brücke über den Fluss")["input_ids"]
    assert ours.decode(ids) == slow.decode(ids, skip_special_tokens=True) == "Die Brücke über den Fluss"


def test_a_marian_with_separate_vocabularies_is_refused():
    from types import SimpleNamespace

    from export.marian_tokenizer import convert_marian

    with pytest.raises(
        ExportError, match=r"separate source and target vocabularies, which one tokenizer.json cannot hold"
    ):
        convert_marian(SimpleNamespace(separate_vocabs=True))


def test_a_slow_tokenizer_without_a_converter_is_refused(tiny_bart_dir, tmp_path, monkeypatch):
    import export.sources

    class OnlySlowTokenizer:
        is_fast = False

    monkeypatch.setattr(export.sources, "_load_tokenizer", lambda source: OnlySlowTokenizer())
    with pytest.raises(
        ExportError,
        match=r"has no fast tokenizer \(tokenizer.json\), which the runtime needs, and its "
        r"OnlySlowTokenizer cannot be converted to one; ",
    ):
        _export(tiny_bart_dir, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
