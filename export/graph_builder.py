"""A small helper to write ONNX graphs by hand: named nodes, numpy initializers, typed inputs and outputs.

Initializers go to a tensor store: `InlineStore` keeps them in the proto; `ExternalStore` appends each one's bytes
to a data file as it is added (page-aligned, so onnxruntime can map it) and keeps only a reference, so a graph
of any size is written holding one tensor at a time. Used by the fused decoder graphs (`fused_graph.py`); it
knows nothing about any architecture.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

MS_DOMAIN = "com.microsoft"
OPSET = 17
ALIGNMENT = 4096  # bytes; onnxruntime maps external data whose offsets are page-aligned
INLINE_BYTES = 1024  # smaller tensors stay in the proto even with an ExternalStore (as onnx's size_threshold)


class InlineStore:
    """Initializers kept in the proto (raw bytes)."""

    def tensor(self, name: str, array: np.ndarray) -> Any:
        from onnx import numpy_helper

        return numpy_helper.from_array(np.ascontiguousarray(array), name)

    def tensor_from_chunks(self, name: str, dtype: Any, shape: tuple[int, ...], chunks: Iterable[np.ndarray]) -> Any:
        return self.tensor(name, np.concatenate(list(chunks)).reshape(shape).astype(dtype, copy=False))


class ExternalStore:
    """Initializers written to `path` as they come; the proto keeps (location, offset, length) references."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file = open(self.path, "wb")
        self.bytes = 0

    def tensor(self, name: str, array: np.ndarray) -> Any:
        array = np.ascontiguousarray(array)
        if array.nbytes < INLINE_BYTES:
            return InlineStore().tensor(name, array)
        return self.tensor_from_chunks(name, array.dtype, array.shape, [array])

    def tensor_from_chunks(self, name: str, dtype: Any, shape: tuple[int, ...], chunks: Iterable[np.ndarray]) -> Any:
        """A tensor of `shape` whose bytes arrive as row chunks in order (each (rows, ...) of `dtype`)."""
        from onnx import TensorProto, helper

        offset = -(-self._file.tell() // ALIGNMENT) * ALIGNMENT
        self._file.write(b"\0" * (offset - self._file.tell()))
        length = 0
        for chunk in chunks:
            data = np.ascontiguousarray(chunk, dtype)
            self._file.write(data.reshape(-1).view(np.uint8))  # the array's own bytes, not a copy of them
            length += data.nbytes
        expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if length != expected:
            raise ValueError(f"tensor {name} got {length} bytes, expected {expected} for shape {shape}")
        tensor = TensorProto()
        tensor.name = name
        tensor.data_type = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        tensor.dims.extend(shape)
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self.path.name), ("offset", str(offset)), ("length", str(length))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        self.bytes = offset + length
        return tensor

    def close(self) -> None:
        self._file.close()


class GraphBuilder:
    def __init__(self, name: str, store: InlineStore | ExternalStore | None = None):
        self.name = name
        self.store = store or InlineStore()
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.inputs: list[Any] = []
        self.outputs: list[Any] = []
        self._count = 0

    def input(self, name: str, dtype: Any, shape: list[Any]) -> str:
        from onnx import helper

        self.inputs.append(helper.make_tensor_value_info(name, _onnx_type(dtype), shape))
        return name

    def output(self, name: str, dtype: Any, shape: list[Any] | None) -> str:
        from onnx import helper

        self.outputs.append(helper.make_tensor_value_info(name, _onnx_type(dtype), shape))
        return name

    def constant(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(self.store.tensor(name, array))
        return name

    def chunked_constant(self, name: str, dtype: Any, shape: tuple[int, ...], chunks: Iterable[np.ndarray]) -> str:
        """A constant whose rows arrive in chunks (written as they come with an ExternalStore)."""
        self.initializers.append(self.store.tensor_from_chunks(name, dtype, shape, chunks))
        return name

    def node(
        self,
        op: str,
        inputs: list[str],
        outputs: int | list[str] = 1,
        name: str | None = None,
        domain: str = "",
        **attrs: Any,
    ) -> list[str]:
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
