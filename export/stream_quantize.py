"""Quantize weights as the fused graph is written: each weight becomes MatMulNBits codes the moment it is read.

`QuantizedPrecision` is the `precision` writer of `fused_graph.py` for int8 and int4. It makes the choices of
`quantize.py` (bits and method per node: `bits_for`; block size: `block_size_for`; 8-bit GatherBlockQuantized
embeddings), so the graph and the manifest's description are the ones the in-memory quantizer would give, but
it never holds more than the weight at hand: a weight is quantized in chunks of rows (rows are independent, for
GPTQ too given the Gram matrix) and its codes go straight to the tensor store.
int4 needs the calibration's statistics first (`draft_calibration.py`): each layer weight's input importance,
and the LM head input's Gram matrix. This file does not calibrate or validate.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .blockwise import Blockwise
from .blockwise import quantize as quantize_weight
from .gptq import gptq, gptq_factors
from .graph_builder import MS_DOMAIN, GraphBuilder
from .quantize import ACCURACY_LEVEL, BLOCK_SIZE, EMBEDDING_BITS, algorithm_note, bits_for, block_size_for

HEAD = "lm_head"
CHUNK_ELEMENTS = 1 << 22  # weights per chunk of rows: bounds the work arrays of the largest weight (an LM head)


class QuantizedPrecision:
    """int8/int4 MatMulNBits for every linear, 8-bit GatherBlockQuantized embeddings; records the plan."""

    share_tied_head = False

    def __init__(
        self,
        scheme: str,
        importance: dict[str, np.ndarray] | None = None,
        head_gram: np.ndarray | None = None,
        draft_bits: int | None = None,
    ):
        self.scheme = scheme
        self.draft_bits = draft_bits  # a draft graph: every weight round-to-nearest at these bits, fast
        self.importance = importance if importance is not None else {}  # node -> (K,) mean square input
        self.head_gram = head_gram  # (K, K) of the LM head's input, for GPTQ
        self.plan: dict[str, tuple[int, str]] = {}  # node -> (bits, method), in graph order
        self.blocks: dict[str, int] = {}
        self.tables: list[str] = []

    def calibrated(self, name: str) -> bool:
        return self.head_gram is not None if name == HEAD else name in self.importance

    def linear(self, g: GraphBuilder, x: str, name: str, weight: np.ndarray, bias: np.ndarray | None) -> str:
        """x @ weight.T (+ bias) for a (N, K) weight, as a MatMulNBits node named `{name}_Q{bits}`."""
        if self.draft_bits is not None:
            bits, method = self.plan[name] = self.draft_bits, "rtn"
        else:
            bits, method = self.plan[name] = bits_for(name, HEAD, self.scheme, self.calibrated(name))
        n, k = weight.shape
        block = self.blocks[name] = block_size_for(bits, k)
        q = self.quantize(weight, bits, block, method, name)
        prefix = f"{name}.weight_t_Q{bits}"
        g.constant(prefix, q.packed)
        g.constant(f"{prefix}_scales", q.scales)
        g.constant(f"{prefix}_zero_points", q.zero_points)
        out = g.node(
            "MatMulNBits",
            [x, prefix, f"{prefix}_scales", f"{prefix}_zero_points"],
            [f"{name}/out"],
            name=f"{name}_Q{bits}",
            domain=MS_DOMAIN,
            K=k,
            N=n,
            bits=bits,
            block_size=block,
            accuracy_level=ACCURACY_LEVEL,
        )[0]
        return out if bias is None else g.one("Add", [out, g.constant(f"{name}.bias", bias)], name=f"{name}.bias_add")

    def embedding(self, g: GraphBuilder, ids: str, table: np.ndarray) -> str:
        """An 8-bit GatherBlockQuantized lookup (a plain Gather if the width is not whole blocks)."""
        if table.shape[1] % BLOCK_SIZE:
            return g.one("Gather", [g.constant("embed_tokens.weight", table), ids], name="embed")
        q = self._chunked(table, lambda rows: quantize_weight(rows, EMBEDDING_BITS, BLOCK_SIZE, "rtn"))
        prefix = f"embed_tokens.weight_Q{EMBEDDING_BITS}"
        g.constant(prefix, q.packed.reshape(table.shape[0], -1))
        g.constant(f"{prefix}_scales", q.scales)
        g.constant(f"{prefix}_zero_points", q.zero_points)
        self.tables.append("embed")
        return g.one(
            "GatherBlockQuantized",
            [prefix, ids, f"{prefix}_scales", f"{prefix}_zero_points"],
            name=f"embed_Q{EMBEDDING_BITS}",
            domain=MS_DOMAIN,
            bits=EMBEDDING_BITS,
            block_size=BLOCK_SIZE,
            quantize_axis=1,
            gather_axis=0,
        )

    def quantize(self, weight: np.ndarray, bits: int, block: int, method: str, name: str) -> Blockwise:
        """Codes of a (N, K) weight by `method` (bits_for), in chunks of rows."""
        if method == "gptq" and weight.shape[1] % block == 0:
            factors = gptq_factors(self.head_gram)
            return self._chunked(weight, lambda rows: gptq(rows, self.head_gram, bits, block, factors))
        if method in ("gptq", "weighted"):  # searched codes, each channel weighed by its mean square input
            importance = self.importance[name] if method == "weighted" else np.diag(self.head_gram)
            return self._chunked(weight, lambda rows: quantize_weight(rows, bits, block, "searched", importance))
        return self._chunked(weight, lambda rows: quantize_weight(rows, bits, block, method))

    def _chunked(self, weight: np.ndarray, fn: Any) -> Blockwise:
        """`fn` over chunks of rows, one after the other: the searched codes use every core inside each chunk
        (quant_kernels.py), and its compiled kernels must not be entered from two threads at once."""
        rows = max(1, CHUNK_ELEMENTS // weight.shape[1])
        parts = [fn(weight[start : start + rows]) for start in range(0, weight.shape[0], rows)]
        first = parts[0]
        return Blockwise(
            first.bits,
            first.block_size,
            weight.shape[0],
            first.k,
            np.concatenate([p.packed for p in parts]),
            np.concatenate([p.scales for p in parts]),
            np.concatenate([p.zero_points for p in parts]),
        )

    def description(self, calibration: dict[str, Any] | None) -> dict[str, Any]:
        """The manifest's quantization entry (the same fields as quantize.quantize_graph's)."""
        nodes = list(self.plan)
        description = {
            "scheme": self.scheme,
            "method": "MatMulNBits, weight-only, blockwise along K, integer zero points",
            "bits": 8 if self.scheme == "int8" else 4,
            "algorithm": algorithm_note(self.plan, HEAD),
            "symmetric": False,
            "accuracy_level": ACCURACY_LEVEL,
            "block_size": BLOCK_SIZE,
            "nodes": nodes,
            "bits_by_node": {name: bits for name, (bits, _) in self.plan.items()},
            "block_size_by_node": dict(self.blocks),
            "lm_head": {"node": HEAD, "bits": self.plan[HEAD][0]},
            "embeddings": {name: EMBEDDING_BITS for name in self.tables},
            "kept_float": "norms, biases, activations",
        }
        if calibration is not None:
            description["calibration"] = calibration
        return description
