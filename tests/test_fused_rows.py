"""Spec: the fused graph with its stream as 2-D rows (what `--quantize gguf` builds) computes what the 3-D one does.

Every tiny family (tiny_families.py, plus Llama) is built twice from the same fp32 weights, `rows=False` and
`rows=True`, and both graphs are run on the export's validation cases (a prompt, a prompt then steps with the
cache, a left-padded batch then a step): the logits agree to float rounding, and the rows graph keeps its 3-D
views to GroupQueryAttention's input and the last-position gather.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

import tiny_families
from benchmarks import tiny_models

FAMILIES = ["llama", *tiny_families.FAMILIES]


@pytest.fixture(scope="module", params=FAMILIES)
def both_graphs(request, tmp_path_factory):
    """(3-D graph path, rows graph path, their runtime names, the validation cases) of one family."""
    from export.families import recipe_for
    from export.fused_graph import build_fused_graph
    from export.onnx_graph import save_onnx
    from export.validate import validation_cases
    from export.weights import StateDictWeights

    folder = tmp_path_factory.mktemp("hf") / request.param
    if request.param == "llama":
        tiny_models.build_tiny_llama(folder, tied=True)
    else:
        tiny_families.build(request.param, folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    recipe = recipe_for(model.config)
    paths = []
    for rows in (False, True):
        proto, decoder = build_fused_graph(recipe, StateDictWeights(model), rows=rows)
        out = tmp_path_factory.mktemp("rows" if rows else "3d")
        paths.append(out / save_onnx(proto, out))
    cases = validation_cases(AutoTokenizer.from_pretrained(folder), decoder.vocab_size, recipe.context_length)
    return *paths, decoder, cases


def _logits(path, decoder, case) -> np.ndarray:
    """Prefill, then one step per remaining column, as the export's validation runs a case: (batch, calls, vocab)."""
    from memgpt_runtime.session import DecoderSession

    rows, width = case.input_ids.shape
    session = DecoderSession(path, decoder.graph, decoder.kv_cache, decoder.vocab_size, width)
    state = session.new_state(rows, width)
    first = case.prefill
    logits = [state.prefill(case.input_ids[:, :first], case.attention_mask[:, :first]).copy()]
    logits += [state.step(case.input_ids[:, column]).copy() for column in range(first, width)]
    return np.stack(logits, axis=1)


def test_the_rows_graph_gives_the_3d_graphs_logits(both_graphs):
    three_d, rows, decoder, cases = both_graphs
    for case in cases:
        np.testing.assert_allclose(
            _logits(rows, decoder, case), _logits(three_d, decoder, case), rtol=0, atol=1e-5, err_msg=case.name
        )


def test_only_attention_and_the_last_position_see_three_dimensions(both_graphs):
    _, rows, _, _ = both_graphs
    graph = onnx.load(str(rows), load_external_data=False).graph
    views = {n.output[0] for n in graph.node if n.op_type == "Reshape" and n.input[1] == "rows.shape3d/out"}
    readers = [n.op_type for n in graph.node if set(n.input) & views]
    attention = [n for n in graph.node if n.op_type == "GroupQueryAttention"]
    assert len(views) == len(attention) + 1  # one per layer's q|k|v, one before the last-position gather
    assert set(readers) <= {"GroupQueryAttention", "Split", "GatherND"}  # Split: q/k norms, then attention
