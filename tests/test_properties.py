"""Property-based checks: whatever a caller throws at the runtime, only the project's own errors come out.

Random option dicts at `GenerationConfig` and `generate`, random id arrays at `generate`, random bytes at the
manifest reader and at the command line's text input. Success is allowed; any exception other than a
MemgptError (a TypeError from numpy, an IndexError from the search, a traceback from the CLI) fails.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import fields

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import memgpt_runtime as mr
from memgpt_runtime.config import GenerationConfig
from memgpt_runtime.manifest import FILENAME

FIELDS = [f.name for f in fields(GenerationConfig)]
QUICK = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.lists(st.integers(min_value=-5, max_value=10**6), max_size=3),
    st.lists(st.lists(st.integers(min_value=-5, max_value=500), max_size=3), max_size=3),
    st.builds(np.int64, st.integers(min_value=-(2**63), max_value=2**63 - 1)),
    st.builds(np.float32, st.floats(width=32)),
)
VOCAB = 384  # tiny_models' vocabulary
token = st.integers(0, VOCAB - 1)
# values that make a quick, valid generation, each field's own; drawn three times in four, `anything` otherwise
valid = {
    "max_new_tokens": st.integers(1, 6),
    "max_length": st.integers(4, 12),
    "min_new_tokens": st.integers(0, 8),
    "min_length": st.integers(0, 12),
    "do_sample": st.booleans(),
    "temperature": st.floats(0.05, 5),
    "top_k": st.integers(0, 500),
    "top_p": st.floats(0.01, 1),
    "seed": st.integers(0, 2**64),
    "num_beams": st.integers(1, 4),
    "length_penalty": st.floats(-3, 3),
    "early_stopping": st.sampled_from([True, False, "never"]),
    "num_return_sequences": st.integers(1, 4),
    "no_repeat_ngram_size": st.integers(0, 4),
    "repetition_penalty": st.floats(0.1, 3),
    "eos_token_id": st.lists(token, max_size=3),
    "pad_token_id": token,
    "forced_bos_token_id": token,
    "forced_eos_token_id": token | st.lists(token, min_size=1, max_size=2),
    "bad_words_ids": st.lists(st.lists(token, min_size=1, max_size=3), max_size=3),
    "decoder_start_token_id": token,
    "renormalize_logits": st.booleans(),
    "return_dict_in_generate": st.booleans(),
    "default_new_tokens": st.integers(1, 6),
}
options = st.dictionaries(st.sampled_from(FIELDS), anything, max_size=6)
runnable_options = st.fixed_dictionaries(
    {}, optional={f: st.one_of(valid[f], valid[f], valid[f], anything) if f in valid else anything for f in FIELDS}
)


@pytest.fixture(scope="module")
def lm(tiny_llama_export):
    return mr.load(tiny_llama_export)


@QUICK
@given(options)
def test_generation_config_raises_only_usage_errors(opts):
    try:
        GenerationConfig.from_defaults({}, **opts)
    except mr.UsageError:
        pass


@QUICK
@given(opts=runnable_options)
def test_generate_with_random_options_raises_only_memgpt_errors(lm, opts):
    if not isinstance(opts.get("max_new_tokens", 0), int) or opts.get("max_new_tokens", 0) > 6:
        opts["max_new_tokens"] = 3  # a huge length is refused (context) or, below the context, only slow
    try:
        out = lm.generate([[5, 6, 7], [8, 9]], **opts)
    except mr.MemgptError as exc:
        event(f"refused: {type(exc).__name__}")
        return
    event("generated")
    check_output(lm, out)


def check_output(lm, out) -> None:
    """Ids inside the vocabulary, or -1 where beam search pads a hypothesis and there is no EOS id (as transformers)."""
    out = out.sequences if isinstance(out, mr.GenerateResult) else out
    assert out.dtype == np.int64 and out.min() >= -1 and out.max() < lm.manifest.vocab_size
    assert all(isinstance(text, str) for text in lm.tokenizer.batch_decode(out))


@QUICK
@given(opts=st.fixed_dictionaries({}, optional=valid))
def test_generate_with_valid_random_options_runs_or_refuses_the_combination(lm, opts):
    try:
        out = lm.generate([[5, 6, 7], [8, 9]], **opts)
    except mr.UsageError as exc:
        event(f"refused: {str(exc)[:40]}")
        return
    event("generated")
    check_output(lm, out)


id_values = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20), st.floats(), st.booleans(), st.none(), st.text(max_size=2)
)
id_inputs = st.one_of(
    st.lists(id_values, max_size=4),
    st.lists(st.lists(id_values, max_size=4), max_size=3),
    st.lists(st.lists(st.lists(st.integers(0, 10), max_size=2), max_size=2), max_size=2),
    st.builds(
        lambda shape, dtype: np.ones(shape, dtype),
        st.lists(st.integers(0, 3), max_size=3),
        st.sampled_from([np.int64, np.int8, np.uint64, np.float32, np.bool_]),
    ),
)


@QUICK
@given(id_inputs)
def test_generate_with_random_ids_raises_only_memgpt_errors(lm, input_ids):
    try:
        lm.generate(input_ids, max_new_tokens=2)
    except mr.MemgptError:
        pass


@pytest.fixture(scope="module")
def manifest_copy(tiny_llama_export, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz") / "copy"
    shutil.copytree(tiny_llama_export, folder)
    return folder


@QUICK
@given(st.binary(max_size=400))
def test_the_manifest_reader_turns_random_bytes_into_folder_errors(manifest_copy, data):
    (manifest_copy / FILENAME).write_bytes(data)
    with pytest.raises(mr.ModelFolderError):
        mr.read_manifest(manifest_copy)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@QUICK
@given(data=st.data())
def test_a_manifest_with_random_field_values_loads_or_says_what_is_wrong(tiny_llama_export, manifest_copy, data):
    body = json.loads((tiny_llama_export / FILENAME).read_text())
    path = data.draw(
        st.sampled_from(
            [[k] for k in body if k not in ("format",)]
            + [[k, sub] for k in ("graph", "kv_cache", "tokens") for sub in body[k]]
        )
    )
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = data.draw(json_values)
    (manifest_copy / FILENAME).write_text(json.dumps(body))
    try:
        mr.load(manifest_copy).generate([5, 6], max_new_tokens=2)
    except mr.MemgptError:
        pass


MEMGPT = [sys.executable, "-m", "memgpt_runtime.cli"]


TEXT_ARGUMENT = st.binary(min_size=1, max_size=40).filter(
    lambda b: b"\0" not in b and not b.startswith(b"-")
)  # "-x" is an option


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argument=TEXT_ARGUMENT, stdin=st.binary(max_size=40))
def test_the_cli_takes_any_bytes_as_text(tiny_llama_export, argument, stdin):
    for args, data in (([argument], None), (["-"], stdin)):
        run = subprocess.run(
            [*MEMGPT, "generate", str(tiny_llama_export), *args, "--max-new-tokens", "2", "--quiet"],
            input=data,
            capture_output=True,
            timeout=120,
        )
        assert run.returncode in (0, 2), run.stderr
        if run.returncode == 2:
            assert run.stderr == b"error: the prompt is empty; give some text to continue\n"
        else:
            assert run.stderr == b""
