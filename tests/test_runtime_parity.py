"""The runtime's generate() equals transformers' generate() token for token on the same fp32 weights.

Each case runs the exported ONNX folder through memgpt_runtime and the HF folder it came from through
transformers 4.57, with the same options, and compares the ids exactly (and beam scores to 1e-4). Tiny random
models rarely emit their EOS by chance, so beam cases take as EOS a token the model does generate: that way
hypotheses finish early and the early-stopping modes and length penalties matter.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

import memgpt_runtime as mr

MODELS = ["tiny_llama", "tiny_gpt2", "tiny_qwen2"]
PROMPTS = [[5, 17, 42, 99, 7], [250, 12], [33, 34, 35, 36, 37, 38, 39, 40]]


@pytest.fixture(scope="module", params=MODELS)
def pair(request):
    """(memgpt model, transformers model) over the same weights."""
    export = request.getfixturevalue(f"{request.param}_export")
    hf_dir = request.getfixturevalue(f"{request.param}_dir")
    torch_model = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    return mr.load(export), torch_model


def hf_generate(model, ids, mask=None, **options):
    with torch.no_grad():
        out = model.generate(
            torch.tensor(ids),
            attention_mask=None if mask is None else torch.tensor(mask),
            return_dict_in_generate=True,
            output_scores=options.get("num_beams", 1) > 1,
            **options,
        )
    scores = getattr(out, "sequences_scores", None)
    return out.sequences.numpy(), None if scores is None else scores.numpy()


def likely_eos(lm, prompt) -> int:
    """A token that greedy decoding emits a few steps in, so that hypotheses end early."""
    out = lm.generate([prompt], max_new_tokens=6, eos_token_id=[], do_sample=False)
    return int(out[0, len(prompt) + 3])


def assert_same(lm, torch_model, prompt, **options):
    ours = lm.generate([prompt], return_dict_in_generate=True, **options)
    ref_ids, ref_scores = hf_generate(torch_model, [prompt], **options)
    np.testing.assert_array_equal(ours.sequences, ref_ids)
    if ref_scores is not None:
        np.testing.assert_allclose(ours.sequences_scores, ref_scores, atol=1e-4, rtol=0)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy(pair, prompt):
    lm, torch_model = pair
    assert_same(lm, torch_model, prompt, max_new_tokens=24, do_sample=False)


@pytest.mark.parametrize("num_beams", [2, 3, 4, 5])
@pytest.mark.parametrize("length_penalty", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("early_stopping", [True, False, "never"])
def test_beam_search(pair, num_beams, length_penalty, early_stopping):
    lm, torch_model = pair
    prompt = PROMPTS[0]
    assert_same(
        lm,
        torch_model,
        prompt,
        max_new_tokens=12,
        num_beams=num_beams,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
        eos_token_id=likely_eos(lm, prompt),
        do_sample=False,
    )


@pytest.mark.parametrize(
    "options",
    [
        dict(num_beams=4, num_return_sequences=3),
        dict(num_beams=3, num_return_sequences=3, early_stopping=True, length_penalty=0.5),
        dict(num_beams=4, no_repeat_ngram_size=2),
        dict(num_beams=3, repetition_penalty=1.5),
        dict(num_beams=2, min_new_tokens=8),
        dict(no_repeat_ngram_size=2),
        dict(repetition_penalty=1.3),
        dict(min_new_tokens=10),
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
def test_options(pair, options):
    lm, torch_model = pair
    prompt = PROMPTS[2]
    assert_same(
        lm, torch_model, prompt, max_new_tokens=14, eos_token_id=likely_eos(lm, prompt), do_sample=False, **options
    )


@pytest.mark.parametrize("num_beams", [1, 3])
def test_batch_of_prompts_of_different_lengths(pair, num_beams):
    lm, torch_model = pair
    ids, mask = lm.tokenizer.pad(PROMPTS)
    ours = lm.generate(ids, attention_mask=mask, max_new_tokens=10, num_beams=num_beams, do_sample=False)
    ref, _ = hf_generate(
        torch_model,
        ids,
        mask,
        max_new_tokens=10,
        num_beams=num_beams,
        do_sample=False,
        pad_token_id=lm.generation_config().pad_id,
    )
    np.testing.assert_array_equal(ours, ref)


def test_ragged_lists_are_left_padded_like_an_explicit_mask(pair):
    lm, _ = pair
    ids, mask = lm.tokenizer.pad(PROMPTS)
    np.testing.assert_array_equal(
        lm.generate(PROMPTS, max_new_tokens=5), lm.generate(ids, attention_mask=mask, max_new_tokens=5)
    )


def default_torch_model():
    from export.sources import default_source

    source = default_source()
    return AutoModelForCausalLM.from_pretrained(source.load_from, gguf_file=source.gguf_file).eval()


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [dict(), dict(num_beams=4), dict(num_beams=3, num_return_sequences=2, length_penalty=0.5, early_stopping=True)],
    ids=["greedy", "beam4", "beam3-nrs2"],
)
def test_default_model_fp32(smollm2_fp32_export, options):
    torch_model = default_torch_model()
    lm = mr.load(smollm2_fp32_export)
    chat = lm.tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True
    )
    assert_same(lm, torch_model, chat, max_new_tokens=24, do_sample=False, **options)


@pytest.mark.slow
def test_default_model_fp32_batch(smollm2_fp32_export):
    torch_model = default_torch_model()
    lm = mr.load(smollm2_fp32_export)
    prompts = [lm.tokenizer.encode(t) for t in ["The cat sat on the", "Water boils at a temperature of", "Hi"]]
    ids, mask = lm.tokenizer.pad(prompts)
    ours = lm.generate(ids, attention_mask=mask, max_new_tokens=16, num_beams=2)
    ref, _ = hf_generate(torch_model, ids, mask, max_new_tokens=16, num_beams=2, do_sample=False)
    np.testing.assert_array_equal(ours, ref)
