"""Hostile and careless input to the runtime: every case gets the project's own error naming what was wrong.

Token ids from anywhere (prompts, options, the manifest) are checked against the vocabulary; thread counts
against the machine; text that is not valid Unicode is read as U+FFFD; a hand-edited manifest fails on the field
it broke. The damaged-folder checks (`memgpt verify`) are in test_verify.py, the command line's in test_cli.py.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

import memgpt_runtime as mr
from memgpt_runtime.manifest import FILENAME, VERSION

VOCAB = 384  # tiny_models' vocabulary


@pytest.fixture(scope="module")
def lm(tiny_llama_export):
    return mr.load(tiny_llama_export)


@pytest.mark.parametrize(
    "input_ids, message",
    [
        ([[1, 10**30]], r"input_ids must hold token ids in \[0, 384\), got 10{30}"),
        ([[[1, 2]]], "got a row holding a list of list"),
        ([[1.0, 2.5]], "got a row holding a list of float"),
        ([1, 2.5], "got a row holding a list of float, int"),
        ([True, False], "got a row holding a list of bool"),
        (np.array([[1.0, 2.0]]), "got an array of float64"),
        (np.zeros((1, 2, 2), np.int64), r"got an array of shape \(1, 2, 2\)"),
        ([-1, 5], r"got -1"),
        ("hello", "got a str"),
        (None, "got a NoneType"),
        ([[1, 2], []], "a prompt in input_ids is empty"),
    ],
)
def test_token_ids_that_are_not_vocabulary_integers_are_refused(lm, input_ids, message):
    with pytest.raises(mr.UsageError, match=message):
        lm.generate(input_ids, max_new_tokens=2)


@pytest.mark.parametrize(
    "mask, message",
    [([[1, 2, 1]], "only 0s and 1s"), ([[1.0, 1.0, 1.0]], "only 0s and 1s"), ([[1, 1]], "shape of input_ids")],
)
def test_attention_masks_must_be_zeros_and_ones_of_the_ids_shape(lm, mask, message):
    with pytest.raises(mr.UsageError, match=message):
        lm.generate([[5, 6, 7]], attention_mask=mask, max_new_tokens=2)


@pytest.mark.parametrize(
    "options, field",
    [
        (dict(eos_token_id=999_999), "eos_token_id"),
        (dict(eos_token_id=[2, 999_999]), "eos_token_id"),
        (dict(pad_token_id=999_999), "pad_token_id"),
        (dict(forced_bos_token_id=VOCAB), "forced_bos_token_id"),
        (dict(forced_eos_token_id=999_999), "forced_eos_token_id"),
        (dict(bad_words_ids=[[999_999]]), "bad_words_ids"),
        (dict(decoder_start_token_id=999_999), "decoder_start_token_id"),
    ],
)
def test_every_token_id_option_is_checked_against_the_vocabulary(lm, options, field):
    with pytest.raises(mr.UsageError, match=rf"{field} must .*\[0, {VOCAB}\), got \d+"):
        lm.generate([5, 6, 7], max_new_tokens=2, **options)


def test_numpy_scalars_are_the_numbers_they_hold(lm):
    plain = lm.generate([5, 6, 7], max_new_tokens=4, do_sample=True, temperature=0.7, top_k=5, seed=3, eos_token_id=[0])
    numpy = lm.generate(
        np.array([5, 6, 7]),
        max_new_tokens=np.int64(4),
        do_sample=np.bool_(True),
        temperature=np.float32(0.7),
        top_k=np.int32(5),
        seed=np.uint8(3),
        eos_token_id=[np.int64(0)],
    )
    np.testing.assert_array_equal(numpy, plain)


@pytest.mark.parametrize("threads", [0, -1, 1000, True, 1.5, "2"])
def test_thread_counts_outside_the_machine_are_refused(tiny_llama_export, threads):
    with pytest.raises(mr.UsageError, match=rf"threads must be a whole number in \[1, {os.cpu_count()}\]"):
        mr.load(tiny_llama_export, threads=threads)


@pytest.mark.parametrize("value", ["abc", "0", "-3", "100000"])
def test_a_bad_MEMGPT_THREADS_is_refused(tiny_llama_export, monkeypatch, value):
    monkeypatch.setenv("MEMGPT_THREADS", value)
    with pytest.raises(mr.UsageError, match="MEMGPT_THREADS"):
        mr.load(tiny_llama_export)


def test_text_that_is_not_valid_unicode_reads_as_replacement_characters(lm):
    assert lm.tokenizer.encode("Hello \udcff\ud800") == lm.tokenizer.encode("Hello \ufffd\ufffd")
    assert lm.generate_text("Hello \udcff", max_new_tokens=3) == lm.generate_text("Hello \ufffd", max_new_tokens=3)
    messages = [{"role": "user", "content": "hi \udcff"}]
    assert lm.generate_text(messages, chat=True, max_new_tokens=3) == lm.generate_text(
        [{"role": "user", "content": "hi \ufffd"}], chat=True, max_new_tokens=3
    )


@pytest.mark.parametrize(
    "prompt, message",
    [
        (123, "must be a string.*got int"),
        (None, "got NoneType"),
        (b"hi", "got bytes"),
        (["hi", 5], "a batch of prompts must be all strings, got a list of int, str"),
    ],
)
def test_a_prompt_that_is_not_text_says_so(lm, prompt, message):
    with pytest.raises(mr.UsageError, match=message):
        lm.generate_text(prompt)


# -- hand-edited manifests -------------------------------------------------------------------------------------


@pytest.fixture
def copy(tiny_llama_export, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(tiny_llama_export, folder)
    return folder


def edit_manifest(folder, change) -> None:
    path = folder / FILENAME
    body = json.loads(path.read_text())
    change(body)
    path.write_text(json.dumps(body))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda b: b.update(tokenizer_file="../../x"), "tokenizer_file '../../x' points outside its folder"),
        (lambda b: b.update(model_file="/etc/passwd"), "model_file '/etc/passwd' points outside its folder"),
        (lambda b: b["files"].update({"../up": {"size": 1, "sha256": "0"}}), "'../up' points outside"),
        (lambda b: b["tokens"].update(eos_token_ids=None), "tokens.eos_token_ids must be a list"),
        (
            lambda b: b["tokens"].update(pad_token_id=VOCAB),
            r"tokens.pad_token_id must be a token id in \[0, vocab_size=384\), got 384",
        ),
        (lambda b: b["kv_cache"].update(num_kv_heads="2"), "kv_cache.num_kv_heads must be an integer >= 1"),
        (lambda b: b["kv_cache"].update(num_layers=0), "kv_cache.num_layers must be an integer >= 1"),
        (lambda b: b["kv_cache"].update(dtype="float16"), "kv_cache.dtype must be \"float32\", got 'float16'"),
        (lambda b: b.update(vocab_size=-5), "vocab_size must be an integer >= 1"),
        (lambda b: b.update(generation_defaults={"eos_token_id": 10**9}), "generation_defaults.eos_token_id"),
        (lambda b: b.update(graph=None), "no valid 'graph' object"),
        (lambda b: b.update(surprise=1), "unknown field surprise"),
        (lambda b: b["kv_cache"].update(colour="red"), "unknown field kv_cache.colour"),
        (lambda b: b.pop("vocab_size"), "lacks the field vocab_size"),
        (lambda b: b.update(version=True), "version True"),
    ],
)
def test_a_hand_edited_manifest_fails_on_the_field_it_broke(copy, change, message):
    edit_manifest(copy, change)
    with pytest.raises(mr.ModelFolderError, match=message):
        mr.load(copy)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda b: b["kv_cache"].update(num_kv_heads=b["kv_cache"]["num_kv_heads"] + 1), "kv_cache.num_kv_heads is 3"),
        (lambda b: b["kv_cache"].update(head_size=b["kv_cache"]["head_size"] * 2), "kv_cache.head_size is"),
        (lambda b: b.update(vocab_size=VOCAB + 100), "vocab_size is 484 but the ONNX model"),
        (lambda b: b["kv_cache"].update(num_layers=b["kv_cache"]["num_layers"] - 1), "more layers than"),
    ],
)
def test_manifest_numbers_that_contradict_the_graph_are_refused_at_load(copy, change, message):
    edit_manifest(copy, change)
    with pytest.raises(mr.ModelFolderError, match=message):
        mr.load(copy)


def test_a_manifest_from_a_newer_runtime_asks_for_an_upgrade_not_a_re_export(copy):
    edit_manifest(copy, lambda b: b.update(version=VERSION + 1))
    with pytest.raises(
        mr.ModelFolderError, match=f"version {VERSION + 1}, newer than this runtime.*upgrade memgpt-runtime"
    ):
        mr.load(copy)
