"""Spec: `lm.logits(ids)` gives every position's logits, and `memgpt perplexity` is the sliding-window perplexity.

The reference is the transformers documentation's loop ("Perplexity of fixed-length models") run on the same
tiny model in PyTorch; the runtime reads the fused graph's logits at every position in one run (graph.all_positions),
a traced graph's directly, and an older fused graph's by stepping its KV cache.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

import memgpt_runtime as mr
from memgpt_runtime.cli import main
from memgpt_runtime.perplexity import perplexity, windows
from memgpt_runtime.scoring import sequence_logits

IDS = [0, 5, 17, 91, 140, 260, 33, 5, 77, 301, 12, 250, 44, 123, 9, 380, 64, 7, 7, 200, 31, 8, 99, 150, 3, 42]


def _torch_logits(folder, ids) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.numpy()


def _docs_perplexity(folder, ids, context, stride) -> float:
    """The transformers docs' sliding-window loop: labels -100 before the new tokens; each window's mean loss
    weighed by the labels it averaged (the docs weigh by that count minus one, a slight approximation)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    encodings = torch.tensor([ids])
    nll_sum, n_tokens, prev_end = 0.0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + context, len(ids))
        trg_len = end - prev_end
        input_ids = encodings[:, begin:end]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            loss = model(input_ids, labels=target_ids).loss
        valid = (target_ids[:, 1:] != -100).sum().item()  # the labels the loss averaged (shifted left by one)
        nll_sum += loss.item() * valid
        n_tokens += valid
        prev_end = end
        if end == len(ids):
            break
    return math.exp(nll_sum / n_tokens)


@pytest.mark.parametrize(
    "length, context, stride, expected",
    [
        (10, 4, 2, [(0, 4, 1), (2, 6, 4), (4, 8, 6), (6, 10, 8)]),
        (10, 4, 4, [(0, 4, 1), (4, 8, 5), (8, 10, 9)]),  # no overlap: each window's first token has no context
        (10, 16, 8, [(0, 10, 1)]),
        (7, 4, 3, [(0, 4, 1), (3, 7, 4)]),
    ],
)
def test_windows_score_each_token_once_with_the_context_before_it(length, context, stride, expected):
    assert windows(length, context, stride) == expected


@pytest.mark.parametrize(
    "export_fixture, hf_fixture", [("tiny_llama_export", "tiny_llama_dir"), ("tiny_gpt2_export", "tiny_gpt2_dir")]
)
def test_logits_at_every_position_equal_pytorch(request, export_fixture, hf_fixture):
    lm = mr.load(request.getfixturevalue(export_fixture))
    want = _torch_logits(request.getfixturevalue(hf_fixture), [IDS[:20], IDS[4:24]])
    got = lm.logits([IDS[:20], IDS[4:24]])
    assert got.shape == want.shape == (2, 20, lm.manifest.vocab_size)
    np.testing.assert_allclose(got, want, atol=2e-4)


def test_fused_exports_record_the_all_positions_value(tiny_llama_export, tiny_gpt2_export):
    assert mr.read_manifest(tiny_llama_export).graph.all_positions == -1
    assert mr.read_manifest(tiny_gpt2_export).graph.all_positions is None  # traced graphs return every position anyway


def test_an_older_fused_folder_is_stepped_to_the_same_logits(tiny_llama_export):
    lm = mr.load(tiny_llama_export)
    older = replace(lm.manifest, graph=replace(lm.manifest.graph, all_positions=None))
    np.testing.assert_allclose(sequence_logits(lm.session, older, IDS), lm.logits(IDS), atol=1e-4)


def test_decoding_logits_are_unchanged_by_the_all_positions_gather(tiny_llama_export, tiny_llama_dir):
    out = mr.load(tiny_llama_export).generate([IDS[:6]], max_new_tokens=8, do_sample=False)
    want = _torch_logits(tiny_llama_dir, out[:, :-1])[0, 5:].argmax(-1)  # greedy: each new token is the argmax
    assert out[0, 6:].tolist() == want.tolist()


@pytest.mark.parametrize("context, stride", [(8, 4), (8, 8), (12, 5), (64, 32)])
def test_perplexity_equals_the_transformers_docs_loop(tiny_llama_export, tiny_llama_dir, context, stride):
    got = perplexity(mr.load(tiny_llama_export), IDS, context, stride)
    assert got.perplexity == pytest.approx(_docs_perplexity(tiny_llama_dir, IDS, context, stride), rel=1e-4)
    assert got.windows == len(windows(len(IDS), context, stride))
    assert (got.context, got.stride) == (context, stride)


def test_logits_refuse_more_tokens_than_the_context(tiny_llama_export):
    lm = mr.load(tiny_llama_export)
    with pytest.raises(mr.PromptTooLongError, match="257 tokens do not fit the model's context of 256"):
        lm.logits([5] * 257)


def test_logits_refuse_rows_of_different_lengths(tiny_llama_export):
    with pytest.raises(mr.UsageError, match="rows of equal length"):
        mr.load(tiny_llama_export).logits([[1, 2, 3], [1, 2]])


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(
        "The quick brown fox jumps over the lazy dog. Hello world! How are you today? " * 3, encoding="utf-8"
    )
    return path


def test_cli_prints_the_perplexity_as_json(tiny_llama_export, text_file, capsys):
    assert (
        main(["perplexity", str(tiny_llama_export), str(text_file), "--context", "16", "--stride", "8", "--json"]) == 0
    )
    body = json.loads(capsys.readouterr().out)
    assert set(body) == {"model", "text", "perplexity", "mean_nll", "tokens", "windows", "context", "stride", "seconds"}
    assert (body["context"], body["stride"]) == (16, 8)
    assert body["perplexity"] == pytest.approx(math.exp(body["mean_nll"]))
    lm = mr.load(tiny_llama_export)
    ids = lm.tokenizer.encode(text_file.read_text(encoding="utf-8"))
    assert body["tokens"] == len(ids) - 1
    assert body["perplexity"] == pytest.approx(perplexity(lm, ids, 16, 8).perplexity, rel=1e-6)


def test_cli_prints_one_line_by_default(tiny_llama_export, text_file, capsys):
    assert main(["perplexity", str(tiny_llama_export), str(text_file), "--context", "32"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("perplexity ") and "(context 32, stride 16, " in out and out.count("\n") == 1


@pytest.mark.parametrize(
    "content, args, message",
    [
        (None, [], "text file .* does not exist; pass a UTF-8 text file"),
        (b"", [], "is empty; perplexity needs some text"),
        (b"  \n\t", [], "is empty"),
        (b"caf\xe9 au lait", [], r"is not UTF-8 text \(byte 3\); convert it to UTF-8 first"),
        (
            b"some text",
            ["--context", "300"],
            r"context must be a whole number in \[2, 256\] \(the model's context\), got 300",
        ),
        (
            b"some text",
            ["--context", "16", "--stride", "0"],
            r"stride must be a whole number in \[1, context=16\], got 0",
        ),
        (b"some text", ["--context", "16", "--stride", "17"], r"stride must be .* got 17"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tiny_llama_export, tmp_path, capsys, content, args, message):
    path = tmp_path / "text.txt"
    if content is not None:
        path.write_bytes(content)
    assert main(["perplexity", str(tiny_llama_export), str(path), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert __import__("re").search(message, err)
