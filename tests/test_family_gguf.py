"""Spec: `memgpt export file.gguf` works for the fused families transformers loads from GGUF, token for token.

Each tiny GGUF file (tiny_gguf.py) is exported straight from the file (read tensor by tensor, `weights.py`) and
compared with transformers loading the same file: the weights the export reads are transformers' own, exactly,
and generation (greedy, beams, a padded batch) gives the same tokens.
"""

from __future__ import annotations

import numpy as np
import pytest
from transformers import AutoConfig, AutoModelForCausalLM

import memgpt_runtime as mr
import tiny_gguf
from memgpt_runtime.manifest import read_manifest
from test_runtime_parity import PROMPTS, assert_same, hf_generate


@pytest.fixture(scope="module", params=tiny_gguf.ARCHITECTURES)
def gguf_family(request, tmp_path_factory):
    """(GGUF path, memgpt model, transformers model from the same file, export folder)."""
    from export import export_model
    from export.progress import Progress

    path = tiny_gguf.write_gguf(request.param, tmp_path_factory.mktemp("gguf") / f"{request.param}.gguf")
    folder = export_model(
        str(path), output=tmp_path_factory.mktemp("export") / request.param, progress=Progress(quiet=True)
    )
    torch_model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()
    return path, mr.load(folder), torch_model, folder


def test_the_export_reads_exactly_the_weights_transformers_loads(gguf_family):
    from export.weights import GGUFWeights

    path, _, torch_model, _ = gguf_family
    weights = GGUFWeights(path, AutoConfig.from_pretrained(path.parent, gguf_file=path.name))
    state = torch_model.state_dict()
    assert set(weights.names()) <= set(state)
    for name in weights.names():
        np.testing.assert_array_equal(weights.get(name), state[name].numpy(), err_msg=name)


def test_the_fused_graph_validates(gguf_family):
    _, _, _, folder = gguf_family
    m = read_manifest(folder)
    assert m.extra == {"graph": "fused"} and m.source["kind"] == "gguf"
    assert m.validation["fp32"]["passed"] is True and m.validation["fp32"]["max_abs_diff"] < 1e-4


@pytest.mark.parametrize("options", [dict(), dict(num_beams=3)], ids=["greedy", "beam3"])
def test_generation_matches_transformers_on_the_gguf(gguf_family, options):
    _, lm, torch_model, _ = gguf_family
    for prompt in PROMPTS:
        assert_same(lm, torch_model, prompt, max_new_tokens=16, do_sample=False, eos_token_id=[], **options)


def test_padded_batch_matches(gguf_family):
    _, lm, torch_model, _ = gguf_family
    ids, mask = lm.tokenizer.pad(PROMPTS)
    ours = lm.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False)
    ref, _ = hf_generate(
        torch_model, ids, mask, max_new_tokens=10, do_sample=False, pad_token_id=lm.generation_config().pad_id
    )
    np.testing.assert_array_equal(ours, ref)
