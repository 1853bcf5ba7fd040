"""A small helper to write ONNX graphs by hand: named nodes, numpy initializers, typed inputs and outputs.

Used by the fused decoder graphs (`llama_graph.py`); it knows nothing about any architecture.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MS_DOMAIN = "com.microsoft"
OPSET = 17


class GraphBuilder:
    def __init__(self, name: str):
        self.name = name
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.inputs: list[Any] = []
        self.outputs: list[Any] = []
        self._count = 0

    def input(self, name: str, dtype: Any, shape: list[Any]) -> str:
        from onnx import helper

        self.inputs.append(helper.make_tensor_value_info(name, _onnx_type(dtype), shape))
        return name

    def output(self, name: str, dtype: Any, shape: list[Any]) -> str:
        from onnx import helper

        self.outputs.append(helper.make_tensor_value_info(name, _onnx_type(dtype), shape))
        return name

    def constant(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], outputs: int | list[str] = 1, name: str | None = None,
             domain: str = "", **attrs: Any) -> list[str]:
        """Add a node; returns its output names (generated from `name` unless given)."""
        from onnx import helper

        self._count += 1
        name = name or f"{op}_{self._count}"
        if isinstance(outputs, int):
            outputs = [f"{name}/out{i}" if outputs > 1 else f"{name}/out" for i in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, domain=domain or None, **attrs))
        return outputs

    def one(self, op: str, inputs: list[str], name: str | None = None, domain: str = "", **attrs: Any) -> str:
        return self.node(op, inputs, 1, name, domain, **attrs)[0]

    def model(self) -> Any:
        from onnx import helper

        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.initializers)
        opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)]
        return helper.make_model(graph, opset_imports=opsets, producer_name="memgpt-runtime")


def _onnx_type(dtype: Any) -> int:
    from onnx import helper

    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
