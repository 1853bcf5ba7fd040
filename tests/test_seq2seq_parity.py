"""Encoder-decoder models: the runtime's generate() equals transformers' generate() token for token.

Tiny random T5, BART and Marian models are exported once per session; each case runs the export through
memgpt_runtime and the HF folder it came from through transformers 4.57 with the same source ids and options,
and compares the decoder ids exactly (and beam scores to 1e-4). Sources are padded on the right, as these
models' tokenizers pad. As in the decoder-only parity tests, beam cases take as EOS a token the model does
generate, so that hypotheses finish early and the early-stopping modes and length penalties matter.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForSeq2SeqLM

import memgpt_runtime as mr

MODELS = ["tiny_t5", "tiny_bart", "tiny_marian"]
SOURCES = [[5, 17, 42, 99, 7, 250], [250, 12], [33, 34, 35, 36, 37, 38, 39, 40, 41]]


@pytest.fixture(scope="module", params=MODELS)
def pair(request):
    """(memgpt model, transformers model) over the same weights."""
    export = request.getfixturevalue(f"{request.param}_export")
    hf_dir = request.getfixturevalue(f"{request.param}_dir")
    return mr.load(export), AutoModelForSeq2SeqLM.from_pretrained(hf_dir).eval()


def right_pad(rows: list[list[int]], pad: int) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad, np.int64)
    mask = np.zeros((len(rows), width), np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = row, 1
    return ids, mask


def hf_generate(model, ids, mask, **options):
    with torch.no_grad():
        out = model.generate(
            torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            return_dict_in_generate=True,
            output_scores=options.get("num_beams", 1) > 1,
            **options,
        )
    scores = getattr(out, "sequences_scores", None)
    return out.sequences.numpy(), None if scores is None else scores.numpy()


def assert_same(lm, torch_model, sources, **options):
    ids, mask = right_pad(sources, lm.manifest.tokens.pad_token_id)
    ours = lm.generate(ids, attention_mask=mask, return_dict_in_generate=True, **options)
    ref_ids, ref_scores = hf_generate(torch_model, ids, mask, **options)
    np.testing.assert_array_equal(ours.sequences, ref_ids)
    if ref_scores is not None:
        np.testing.assert_allclose(ours.sequences_scores, ref_scores, atol=1e-4, rtol=0)


def likely_eos(lm, source) -> int:
    """A token that greedy decoding emits a few steps in, so that hypotheses end early."""
    out = lm.generate([source], max_new_tokens=6, eos_token_id=[], forced_eos_token_id=None, num_beams=1)
    return int(out[0, 4])


@pytest.mark.parametrize("source", SOURCES)
def test_greedy(pair, source):
    lm, torch_model = pair
    assert_same(lm, torch_model, [source], max_new_tokens=16, num_beams=1)


def test_greedy_on_a_right_padded_batch(pair):
    lm, torch_model = pair
    assert_same(lm, torch_model, SOURCES, max_new_tokens=16, num_beams=1)


def test_the_models_own_generation_defaults(pair):
    """No options at all: both sides read the same generation config (beams, n-gram bans, forced tokens)."""
    lm, torch_model = pair
    assert_same(lm, torch_model, SOURCES[:2])


@pytest.mark.parametrize("beams", [2, 3, 5])
@pytest.mark.parametrize("length_penalty", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("early_stopping", [True, False, "never"])
def test_beam_search(pair, beams, length_penalty, early_stopping):
    lm, torch_model = pair
    eos = likely_eos(lm, SOURCES[0])
    assert_same(
        lm,
        torch_model,
        SOURCES[:2],
        num_beams=beams,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
        num_return_sequences=2,
        eos_token_id=eos,
        max_new_tokens=10,
    )


@pytest.mark.parametrize("beams", [2, 4])
def test_beam_search_on_a_padded_batch_with_processors(pair, beams):
    lm, torch_model = pair
    assert_same(
        lm,
        torch_model,
        SOURCES,
        num_beams=beams,
        num_return_sequences=beams,
        no_repeat_ngram_size=2,
        repetition_penalty=1.3,
        min_new_tokens=3,
        max_new_tokens=12,
    )


def test_forced_bos_and_eos_tokens(pair):
    lm, torch_model = pair
    assert_same(lm, torch_model, SOURCES, num_beams=1, forced_bos_token_id=7, forced_eos_token_id=9, max_new_tokens=8)
    assert_same(lm, torch_model, SOURCES, num_beams=3, forced_bos_token_id=7, forced_eos_token_id=9, max_new_tokens=8)


def test_bad_words_are_never_generated(pair):
    lm, torch_model = pair
    banned = likely_eos(lm, SOURCES[0])
    assert_same(lm, torch_model, SOURCES, num_beams=1, bad_words_ids=[[banned]], max_new_tokens=10)
    out = lm.generate([SOURCES[0]], num_beams=1, bad_words_ids=[[banned]], max_new_tokens=10)
    assert banned not in out[0, 1:]


@pytest.mark.parametrize("beams", [1, 3])
def test_renormalized_logits_with_banned_words(pair, beams):
    """Like opus-mt's generation config: bad words banned, then the scores renormalized (beam scores change)."""
    lm, torch_model = pair
    banned = likely_eos(lm, SOURCES[0])
    assert_same(
        lm, torch_model, SOURCES, num_beams=beams, bad_words_ids=[[banned]], renormalize_logits=True, max_new_tokens=8
    )


def test_output_starts_with_the_decoder_start_token(pair):
    lm, _ = pair
    out = lm.generate(SOURCES, max_new_tokens=5, num_beams=1)
    assert (out[:, 0] == lm.manifest.tokens.decoder_start_token_id).all()
    assert out.shape[1] <= 6


def test_ragged_lists_are_right_padded_like_an_explicit_mask(pair):
    lm, _ = pair
    ids, mask = right_pad(SOURCES, lm.manifest.tokens.pad_token_id)
    explicit = lm.generate(ids, attention_mask=mask, max_new_tokens=8, num_beams=1)
    np.testing.assert_array_equal(lm.generate(SOURCES, max_new_tokens=8, num_beams=1), explicit)


def test_seeded_sampling_is_reproducible_and_differs_across_seeds(pair):
    lm, _ = pair
    runs = [lm.generate(SOURCES, do_sample=True, seed=seed, max_new_tokens=12, num_beams=1) for seed in (1, 1, 2)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_source_longer_than_the_encoder_takes_is_refused(pair):
    lm, _ = pair
    too_long = [5] * (lm.manifest.encoder.max_source_length + 1)
    with pytest.raises(mr.PromptTooLongError, match="encoder takes at most"):
        lm.generate([too_long], max_new_tokens=2)


def test_generate_text_decodes_only_the_new_tokens(pair):
    lm, torch_model = pair
    text = lm.generate_text("Hello world", max_new_tokens=8, num_beams=1)
    ids = lm.tokenizer.encode("Hello world")
    ref, _ = hf_generate(torch_model, np.array([ids]), np.ones((1, len(ids)), np.int64), max_new_tokens=8, num_beams=1)
    assert text == lm.tokenizer.decode(ref[0, 1:].tolist(), skip_special_tokens=True)


def test_streaming_yields_the_plain_calls_text(pair):
    lm, _ = pair
    plain = lm.generate_text("Hello world", max_new_tokens=8, num_beams=1)
    assert "".join(lm.generate_text("Hello world", stream=True, max_new_tokens=8, num_beams=1)) == plain


def test_quantized_encoder_decoder_generates(tiny_bart_int8, tiny_bart_export):
    quantized, reference = mr.load(tiny_bart_int8), mr.load(tiny_bart_export)
    assert quantized.manifest.quantization["scheme"] == "int8"
    out = quantized.generate(SOURCES, max_new_tokens=8, num_beams=2)
    assert out.shape == reference.generate(SOURCES, max_new_tokens=8, num_beams=2).shape
