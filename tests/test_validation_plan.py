"""Spec: what a streamed export is validated against depends on what PyTorch can hold here, and the manifest
says which reference each figure was measured against (export/reference.py)."""

from __future__ import annotations

import pytest

from export.reference import ValidationPlan, plan_validation
from export.weights import Weights

GIB = 2**30


class _Count(Weights):
    def __init__(self, parameters: int):
        self.parameters = parameters

    def parameter_count(self) -> int:
        return self.parameters


@pytest.mark.parametrize(
    "parameters, expected",
    [
        (135_000_000, ("whole", "float32")),  # SmolLM2-135M: 0.5 GB of fp32 weights
        (1_236_000_000, ("truncated", "bfloat16")),  # Llama-3.2-1B: 2.5 GB in bf16, under a quarter of 24 GiB
        (8_030_000_000, ("truncated", "truncated")),  # Llama-3-8B: 16 GB in bf16
    ],
)
def test_the_plan_follows_what_pytorch_can_hold(parameters, expected):
    plan = plan_validation(_Count(parameters), num_layers=16, memory=24 * GIB)
    assert (plan.fp32_graph, plan.reference, plan.layers) == (*expected, (0, 15))


@pytest.mark.parametrize(
    "plan, fp32_note, exported_note",
    [
        (
            ValidationPlan("whole", "float32", (0, 15)),
            {"reference": "the whole model in PyTorch fp32"},
            {"reference": "the whole model in PyTorch fp32"},
        ),
        (
            ValidationPlan("truncated", "bfloat16", (0, 15)),
            {"reference": "a truncated copy in PyTorch fp32", "truncated_layers": [0, 15]},
            {"reference": "the whole model in PyTorch bf16"},
        ),
        (
            ValidationPlan("truncated", "truncated", (0, 31)),
            {"reference": "a truncated copy in PyTorch fp32", "truncated_layers": [0, 31]},
            {"reference": "a truncated copy in PyTorch fp32", "truncated_layers": [0, 31]},
        ),
    ],
)
def test_the_manifest_names_the_reference_of_each_check(plan, fp32_note, exported_note):
    assert plan.describe("fp32") == fp32_note
    assert plan.describe() == exported_note
