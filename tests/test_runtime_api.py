"""The Python API of the runtime: loading, inputs, options, text in and out, streaming, and the errors it gives."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import memgpt_runtime as mr
from memgpt_runtime.manifest import FILENAME, VERSION
from memgpt_runtime.stream import TextStream


@pytest.fixture(scope="module")
def lm(tiny_llama_export):
    return mr.load(tiny_llama_export)


HEAVY = ("torch", "transformers", "optimum", "onnx", "export")


def modules_loaded_by(code: str) -> list[str]:
    probe = f"import sys; {code}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_importing_the_runtime_loads_no_heavy_package():
    assert modules_loaded_by("import memgpt_runtime, memgpt_runtime.chat") == []


def test_the_cli_parser_loads_plugins_but_no_heavy_package():
    # `memgpt export` registers itself through an entry point; its module must stay light
    assert modules_loaded_by("import memgpt_runtime.cli as c; c.build_parser()") == ["export"]


def test_generate_returns_prompt_and_new_tokens(lm):
    out = lm.generate([5, 6, 7], max_new_tokens=4)
    assert out.dtype == np.int64 and out.shape == (1, 7)
    np.testing.assert_array_equal(out[0, :3], [5, 6, 7])


def test_inputs_as_list_array_and_nested_list_agree(lm):
    a = lm.generate([5, 6, 7], max_new_tokens=4)
    b = lm.generate(np.array([[5, 6, 7]]), max_new_tokens=4)
    c = lm.generate([[5, 6, 7]], max_new_tokens=4)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_default_length_is_the_models_generation_config(lm):
    # the tiny Llama's generation_config.json sets max_new_tokens=32 and no EOS in reach is forced off here
    out = lm.generate([5, 6, 7], eos_token_id=[])
    assert out.shape == (1, 3 + lm.manifest.generation_defaults["max_new_tokens"])


def test_beam_scores_come_back_with_return_dict(lm):
    res = lm.generate([5, 6, 7], max_new_tokens=5, num_beams=3, num_return_sequences=2, return_dict_in_generate=True)
    assert res.sequences.shape[0] == 2 and res.sequences_scores.shape == (2,)
    assert res.sequences_scores[0] >= res.sequences_scores[1]


def test_seeded_sampling_is_reproducible(lm):
    kwargs = dict(max_new_tokens=12, do_sample=True, temperature=1.5, top_k=0, eos_token_id=[])
    a = lm.generate([5, 6, 7], seed=7, **kwargs)
    b = lm.generate([5, 6, 7], seed=7, **kwargs)
    c = lm.generate([5, 6, 7], seed=8, **kwargs)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    "options, field",
    [
        (dict(top_p=1.5), "top_p"),
        (dict(top_p=0.0), "top_p"),
        (dict(temperature=0.0), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(top_k=-1), "top_k"),
        (dict(top_k=True), "top_k"),
        (dict(num_beams=0), "num_beams"),
        (dict(num_beams=2, num_return_sequences=3), "num_return_sequences"),
        (dict(num_return_sequences=2), "num_return_sequences"),
        (dict(early_stopping="sometimes"), "early_stopping"),
        (dict(repetition_penalty=-1.0), "repetition_penalty"),
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(no_repeat_ngram_size=1.5), "no_repeat_ngram_size"),
        (dict(do_sample=True, num_beams=2), "beam sampling"),
        (dict(beams=2), "unknown generation option 'beams'"),
    ],
)
def test_invalid_options_name_the_field(lm, options, field):
    with pytest.raises(mr.UsageError, match=field):
        lm.generate([5, 6, 7], **options)


def test_prompt_longer_than_the_context_is_refused(lm):
    context = lm.manifest.context_length
    with pytest.raises(mr.PromptTooLongError, match=f"context is {context}"):
        lm.generate([5] * (context - 2), max_new_tokens=5)


def test_max_length_shorter_than_the_prompt_is_refused(lm):
    with pytest.raises(mr.UsageError, match="max_length"):
        lm.generate([5, 6, 7, 8], max_length=3)


@pytest.mark.parametrize("prompt", ["", "   ", []])
def test_empty_prompt_is_refused(lm, prompt):
    with pytest.raises(mr.UsageError, match="empty"):
        if isinstance(prompt, str):
            lm.generate_text(prompt)
        else:
            lm.generate(prompt)


def test_out_of_vocabulary_ids_are_refused(lm):
    with pytest.raises(mr.UsageError, match=r"input_ids must hold token ids in \[0, 384\), got 400"):
        lm.generate([5, 400])


def test_generate_text_decodes_only_the_new_tokens(lm):
    ids = lm.tokenizer.encode("Hello world")
    out = lm.generate([ids], max_new_tokens=6)
    assert lm.generate_text("Hello world", max_new_tokens=6) == lm.tokenizer.decode(
        out[0, len(ids) :], skip_special_tokens=True
    )


def test_generate_text_takes_a_batch(lm):
    texts = lm.generate_text(["Hello world", "The quick brown fox"], max_new_tokens=5)
    assert isinstance(texts, list) and len(texts) == 2
    assert texts[1] == lm.generate_text("The quick brown fox", max_new_tokens=5)


def test_chat_template_matches_transformers(lm, tiny_llama_dir):
    from transformers import AutoTokenizer

    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
    ]
    ref = AutoTokenizer.from_pretrained(tiny_llama_dir).apply_chat_template(messages, add_generation_prompt=True)
    assert lm.tokenizer.apply_chat_template(messages, add_generation_prompt=True) == ref


def test_stream_yields_the_same_text_as_a_plain_call(lm):
    options = dict(max_new_tokens=20, do_sample=True, seed=3, temperature=2.0, top_k=0, eos_token_id=[])
    pieces = list(lm.generate_text("Café", stream=True, **options))
    assert len(pieces) > 1
    assert "".join(pieces) == lm.generate_text("Café", **options)


def test_stream_refuses_beam_search(lm):
    with pytest.raises(mr.UsageError, match="num_beams=1"):
        lm.generate_text("hi", stream=True, num_beams=2)


def test_text_stream_never_splits_a_multibyte_character(lm):
    text = "Café 東京 😀 naïve"
    ids = lm.tokenizer.encode(text, add_special_tokens=False)
    stream = TextStream(lm.tokenizer)
    pieces = [stream.push([i]) for i in ids] + [stream.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


@pytest.fixture
def broken_copy(tiny_llama_export, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(tiny_llama_export, folder)
    return folder


def test_missing_folder_says_how_to_export(tmp_path):
    with pytest.raises(mr.ModelFolderError, match="memgpt export"):
        mr.load(tmp_path / "nope")


def test_folder_without_manifest_is_not_an_export(tmp_path):
    with pytest.raises(mr.ModelFolderError, match="no manifest.json"):
        mr.load(tmp_path)


def test_stale_manifest_version_asks_for_a_re_export(broken_copy):
    path = broken_copy / FILENAME
    body = json.loads(path.read_text())
    body["version"] = 0
    path.write_text(json.dumps(body))
    with pytest.raises(mr.ModelFolderError, match="version 0.*--force"):
        mr.load(broken_copy)


def test_version_1_manifest_still_loads_as_a_decoder_only_model(broken_copy):
    path = broken_copy / FILENAME
    body = json.loads(path.read_text())
    body["version"] = 1
    del body["kind"], body["encoder"], body["files"]  # version 1 had none of these fields
    path.write_text(json.dumps(body))
    assert VERSION == 3
    assert mr.read_manifest(broken_copy).kind == "decoder-only"


def test_corrupt_model_file_is_reported(broken_copy):
    model = broken_copy / mr.read_manifest(broken_copy).model_file
    data = model.read_bytes()
    model.write_bytes(b"\xff" * 1000 + data[1000:])  # same size: the size check passes, onnxruntime does not
    with pytest.raises(mr.ModelFolderError, match="cannot load"):
        mr.load(broken_copy)


def test_missing_tokenizer_is_reported(broken_copy):
    (broken_copy / "tokenizer.json").unlink()
    with pytest.raises(mr.ModelFolderError, match="tokenizer.json"):
        mr.load(broken_copy)
