"""Spec: every family of the fused graph generates token for token what transformers 4.57 generate() does.

Each tiny model (tiny_families.py) is exported in fp32 and compared with its HF folder, greedy, with beams and
in a left-padded batch, as test_runtime_parity.py does for Llama and Qwen2. The windows, soft-caps, partial
rotary and multipliers of each family are set so that they change the tokens when they are missing.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

import memgpt_runtime as mr
import tiny_families
from memgpt_runtime.manifest import read_manifest
from test_runtime_parity import PROMPTS, assert_same, hf_generate, likely_eos

FAMILIES = list(tiny_families.FAMILIES)


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tmp_path_factory):
    """(name, memgpt model, transformers model, export folder) over the same fp32 weights."""
    from export import export_model
    from export.progress import Progress

    hf = tiny_families.build(request.param, tmp_path_factory.mktemp("hf") / request.param)
    folder = export_model(
        str(hf), output=tmp_path_factory.mktemp("export") / request.param, progress=Progress(quiet=True)
    )
    return request.param, mr.load(folder), AutoModelForCausalLM.from_pretrained(hf).eval(), folder


def test_the_export_takes_the_fused_graph_and_validates(family):
    _, _, _, folder = family
    m = read_manifest(folder)
    assert m.extra == {"graph": "fused"}
    assert m.kv_cache.layout == "shared"
    assert m.validation["fp32"]["passed"] is True and m.validation["fp32"]["max_abs_diff"] < 1e-4


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy(family, prompt):
    _, lm, torch_model, _ = family
    assert_same(lm, torch_model, prompt, max_new_tokens=20, do_sample=False)


@pytest.mark.parametrize(
    "options",
    [
        dict(num_beams=3, length_penalty=1.0, early_stopping=True),
        dict(num_beams=4, num_return_sequences=2, length_penalty=0.5, early_stopping=False),
    ],
    ids=["beam3", "beam4-nrs2"],
)
def test_beam_search(family, options):
    _, lm, torch_model, _ = family
    prompt = PROMPTS[0]
    assert_same(
        lm, torch_model, prompt, max_new_tokens=12, eos_token_id=likely_eos(lm, prompt), do_sample=False, **options
    )


@pytest.mark.parametrize("num_beams", [1, 3])
def test_padded_batch(family, num_beams):
    _, lm, torch_model, _ = family
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


def test_the_options_that_make_each_family_differ_change_its_tokens():
    """A guard on the tests themselves: with its window, soft-cap or multipliers off, each model writes other tokens."""
    import copy

    prompt = torch.tensor([PROMPTS[2]])
    changes = {
        "gemma2": dict(sliding_window=4096, attn_logit_softcapping=None, final_logit_softcapping=None),
        "gemma3": dict(sliding_window=4096, final_logit_softcapping=None),
        "phi3": dict(sliding_window=None),
        "granite": dict(residual_multiplier=1.0),
        "mistral": dict(sliding_window=None),
        "qwen2_sliding": dict(layer_types=["full_attention"] * 2),
        "stablelm": dict(partial_rotary_factor=1.0),
    }
    for name, change in changes.items():
        torch.manual_seed(11)
        model = tiny_families.FAMILIES[name]()
        tiny_families._randomize(model)
        config = copy.deepcopy(model.config)
        for key, value in change.items():
            setattr(config, key, value)
        other = type(model)(config)
        other.load_state_dict(model.state_dict())
        with torch.no_grad():
            a = model.eval().generate(prompt, max_new_tokens=20, do_sample=False, eos_token_id=None)
            b = other.eval().generate(prompt, max_new_tokens=20, do_sample=False, eos_token_id=None)
        assert not torch.equal(a, b), name
