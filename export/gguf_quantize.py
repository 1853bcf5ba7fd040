"""`--quantize gguf`: every weight of the fp32 graph keeps its GGUF file's own codes and scales, rounded by nobody.

The fp32 graph was built from the weights transformers dequantized from the file, so each output column of a
weight MatMul (each row of an embedding table) is, bit for bit, one row of one GGUF tensor, whatever the graph
did on the way: q|k|v and gate|up concatenated, Llama's q/k rows permuted, the head tied to the embedding.
`GGUFRows` indexes every row of the file by its dequantized bytes; a node whose columns are all found gets the
codes of those rows (`gguf_blocks.py`), checked to dequantize to exactly the node's weight, as onnxruntime
operators:
  - formats without a minimum (Q4_0, Q8_0, Q5_0, Q3_K, Q6_K's 6-bit codes as 8-bit): one MatMulNBits with
    integer zero points; Q8_0 and Q6_K embedding tables become GatherBlockQuantized the same way;
  - formats with a per-block minimum (Q4_1, Q5_1, Q2_K, Q4_K, Q5_K): x·W = Σ_b d_b (x_b·q_b) + m_b Σ x_b, a
    MatMulNBits of the codes with zero point 0 whose K/block extra output columns are the block sums of x
    (codes 1 on their block), split off, then those sums times the (K/block, N) matrix of minimums, added: one
    `Gemm(sums, minimums, C = codes' product)` when x is (rows, K), as the fused graph built for this scheme
    has it (`ROWS`), else `MatMul` then `Add` (Gemm takes 2-D inputs only).
Columns of different formats in one node (Q4_K_M's q|k in Q4_K and v in Q6_K) become one MatMulNBits each,
concatenated. A node with a row the file does not hold exactly, or in a format that is not integer codes (float
tensors, IQ grids), falls back to the int8 path for that node only, and the description says which and why.
Why not float zero points (one MatMulNBits for Q4_1): onnxruntime runs them 60-100x slower at one row
(blockwise.py). Measurements: docs/gguf.md. This file does not validate accuracy (validate.py measures it).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from memgpt_runtime.errors import ExportError

from .blockwise import pack
from .gguf_blocks import ExactBlocks, decodable, decode
from .quantize import (
    ACCURACY_LEVEL,
    FLOAT_TYPES,
    _rewrite,
    fold_transposed_weights,
    lm_head,
    name_unnamed_nodes,
    quantize_embeddings,
    replace_with_matmul_nbits,
    split_gemms,
    weight_matmuls,
)

SCHEME = "gguf"
FALLBACK = "int8"  # what a weight the file cannot give exactly becomes: 8-bit round-to-nearest (quantize.py)
GATHER_BITS = (4, 8)  # GatherBlockQuantized's widths
CENTER_MINIMUMS = True  # see _centered
MINIMUMS_SUFFIX = "_minimums"  # the float MatMul/Gemm of block sums by minimums (small: K/block rows)
ROWS = True  # build the fused graph's stream as 2-D rows for this scheme: Split + Gemm per minimum group, not 3 nodes


class GGUFRows:
    """Every 2-D tensor of a GGUF file: its type, its decoded blocks, and an index of its rows by value."""

    def __init__(self, path: str | Path):
        import gguf

        reader = gguf.GGUFReader(str(path))
        self.names: list[str] = []
        self.types: list[str] = []
        self.blocks: list[ExactBlocks | None] = []
        self._index: dict[int, list[tuple[int, int]]] = {}  # hash of a row's float32 bytes -> (tensor, row)
        for tensor in reader.tensors:
            if len(tensor.data.shape) != 2:
                continue  # norms and biases stay float in the graph; 3-D expert stacks are not matched
            values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)  # (rows, K) as transformers loads it
            type_name = tensor.tensor_type.name
            blocks = decode(type_name, np.asarray(tensor.data)) if decodable(type_name) else None
            if blocks is not None and not np.array_equal(blocks.dequantize(), values):
                blocks = None  # subtle: never keep codes that do not give the loaded values back exactly
            i = len(self.names)
            self.names.append(tensor.name)
            self.types.append(type_name)
            self.blocks.append(blocks)
            for row, data in enumerate(values):
                self._index.setdefault(hash(data.tobytes()), []).append((i, row))

    def find(self, rows: np.ndarray) -> list[tuple[int, int]] | None:
        """(tensor, row) of the file for each row of `rows` (n, K) float32, or None if any is not in the file.

        Equal rows can sit in several places; a row continuing the previous one's tensor is preferred, so a
        node's columns stay in as few formats as possible (any of them gives the same values).
        """
        found: list[tuple[int, int]] = []
        for data in np.ascontiguousarray(rows, np.float32):
            places = self._index.get(hash(data.tobytes()))
            if not places:
                return None
            if found and len(places) > 1:
                last = found[-1]
                places = sorted(places, key=lambda p: (p[0] != last[0], p[1] != last[1] + 1))
            found.append(places[0])
        return found


def quantize_gguf(proto: Any, gguf_path: str | Path, two_d: bool = False) -> tuple[Any, dict[str, Any]]:
    """Rewrite the fp32 `proto`'s weight MatMuls and embedding tables with the GGUF file's codes; a manifest dict.

    `two_d`: every weight MatMul's input is 2-D (rows, K), as in a fused graph built with `rows`; the minimum
    terms are then one Gemm each instead of a MatMul and an Add."""
    fold_transposed_weights(proto)
    name_unnamed_nodes(proto)
    split_gemms(proto)
    targets = weight_matmuls(proto)
    head = lm_head(proto)
    wanted = set(targets)
    rows = GGUFRows(gguf_path)
    inits = {t.name: t for t in proto.graph.initializer}
    kept: dict[str, dict[str, Any]] = {}  # node -> what it keeps
    fallback: dict[str, str] = {}  # node -> why it falls back
    tensors: dict[str, dict[str, Any]] = {}  # GGUF tensor -> {"type", "nodes", "kept"}

    def swap(node: Any) -> tuple[list[Any], str, list[Any]] | None:
        if node.name not in wanted:
            return None
        from onnx import numpy_helper

        weight = numpy_helper.to_array(inits[node.input[1]])  # (K, N)
        runs, places, why = _exact_runs(rows, weight.T)
        _record(tensors, rows, node.name, places, runs is not None)
        if runs is None:
            fallback[node.name] = why
            return None
        nodes, new = _matmul_nodes(node, runs, two_d)
        kept[node.name] = {
            "gguf": sorted({rows.names[t] for run in runs for t, _ in run[1]}),
            "formats": [_describe(blocks) for blocks, _ in runs],
        }
        return nodes, node.input[1], new

    _rewrite_many(proto, swap)
    embeddings = _exact_embeddings(proto, rows, tensors)
    plan = {name: (8, "rtn") for name in fallback}
    blocks = replace_with_matmul_nbits(proto, plan, {}) if plan else {}
    tables = quantize_embeddings(proto)  # the tables the file does not hold exactly: 8-bit, as int8 does
    left = [name for name in weight_matmuls(proto) if not name.endswith(MINIMUMS_SUFFIX)]
    if left:
        raise ExportError(
            f"gguf quantization left {len(left)} float weight MatMul(s) (e.g. {left[:1]}); please report it"
        )
    description = _description(targets, head, kept, fallback, blocks, embeddings, tables, tensors, Path(gguf_path))
    description["minimum_nodes"] = "Split, Gemm" if two_d else "Split, MatMul, Add"  # after each codes' MatMulNBits
    return proto, description


def _exact_runs(rows: GGUFRows, columns: np.ndarray) -> tuple[list[tuple[ExactBlocks, list]] | None, list | None, str]:
    """A weight's (N, K) output columns as runs of one format each, [(blocks, [(tensor, row), ...])], or None; the
    (tensor, row) of every column (None if some column is not in the file); why there are no runs."""
    places = rows.find(columns)
    if places is None:
        return None, None, "not found in the GGUF file"
    types = sorted({rows.types[t] for t, _ in places if rows.blocks[t] is None})
    if types:
        return None, places, f"{', '.join(types)} has no exact integer-code form"
    runs: list[tuple[ExactBlocks, list]] = []
    start = 0
    for end in range(1, len(places) + 1):
        if end == len(places) or rows.blocks[places[end][0]].format != rows.blocks[places[start][0]].format:
            part = places[start:end]
            runs.append((_gather(rows, part), part))
            start = end
    rebuilt = np.concatenate([blocks.dequantize() for blocks, _ in runs])
    if not np.array_equal(rebuilt, columns):
        return None, places, "its codes do not give the graph's weight back exactly"
    return runs, places, ""


def _gather(rows: GGUFRows, places: list[tuple[int, int]]) -> ExactBlocks:
    """The ExactBlocks of `places`, rows of tensors of one format, in order."""
    parts, start = [], 0
    for end in range(1, len(places) + 1):
        if end == len(places) or places[end][0] != places[start][0]:
            tensor = places[start][0]
            parts.append(rows.blocks[tensor].take(np.array([r for _, r in places[start:end]])))
            start = end
    first = parts[0]
    minimums = None if first.minimums is None else np.concatenate([p.minimums for p in parts])
    return ExactBlocks(
        first.type_name,
        first.bits,
        first.block_size,
        first.zero_point,
        np.concatenate([p.codes for p in parts]),
        np.concatenate([p.scales for p in parts]),
        minimums,
    )


def _matmul_nodes(node: Any, runs: list[tuple[ExactBlocks, list]], two_d: bool) -> tuple[list[Any], list[Any]]:
    """The nodes and initializers replacing MatMul `node` (input x, its (K, N) weight) by its exact runs."""
    from onnx import helper

    x, out = node.input[0], node.output[0]
    nodes, tensors, outputs = [], [], []
    for i, (blocks, _) in enumerate(runs):
        name = f"{node.name}_gguf{i}" if len(runs) > 1 else f"{node.name}_gguf"
        y = out if len(runs) == 1 else f"{name}/out"
        n_nodes, n_tensors = _run_nodes(x, blocks, name, y, two_d)
        nodes += n_nodes
        tensors += n_tensors
        outputs.append(y)
    if len(runs) > 1:
        nodes.append(helper.make_node("Concat", outputs, [out], name=f"{node.name}_gguf_concat", axis=-1))
    return nodes, tensors


def _run_nodes(x: str, blocks: ExactBlocks, name: str, out: str, two_d: bool) -> tuple[list[Any], list[Any]]:
    """One MatMulNBits (+ the minimums' product) computing x @ blocks^T into `out`; x is (rows, K) if `two_d`."""
    from onnx import helper, numpy_helper

    blocks = _centered(blocks)
    n, k = blocks.codes.shape
    size, bits, zero = blocks.block_size, blocks.bits, blocks.zero_point
    k_blocks = k // size
    codes = blocks.codes.reshape(n, k_blocks, size)
    scales = blocks.scales
    if blocks.minimums is not None:  # k_blocks more columns: the block sums of x (code zero + 1 on their block)
        sums = np.full((k_blocks, k_blocks, size), zero, np.uint8)
        sums[np.arange(k_blocks), np.arange(k_blocks)] = zero + 1
        codes = np.concatenate([codes, sums])
        scales = np.concatenate([scales, np.ones((k_blocks, k_blocks), np.float32)])
    q = pack(codes, scales, np.full(scales.shape, zero, np.uint8), bits, size, k)
    prefix = f"{name}.weight_Q{bits}"
    inputs = [x, prefix, f"{prefix}_scales"]
    tensors = [numpy_helper.from_array(q.packed, prefix), numpy_helper.from_array(q.scales, f"{prefix}_scales")]
    if zero != 2 ** (bits - 1):  # MatMulNBits' default zero point; leaving it out keeps the symmetric kernels
        inputs.append(f"{prefix}_zero_points")
        tensors.append(numpy_helper.from_array(q.zero_points, f"{prefix}_zero_points"))
    if blocks.minimums is None:
        node = helper.make_node(
            "MatMulNBits",
            inputs,
            [out],
            name=name,
            domain="com.microsoft",
            K=k,
            N=n,
            bits=bits,
            block_size=size,
            accuracy_level=ACCURACY_LEVEL,
        )
        return [node], tensors
    both, codes_part, sums_part = f"{name}/codes_and_sums", f"{name}/codes", f"{name}/block_sums"
    split = f"{name}.split"
    tensors += [
        numpy_helper.from_array(np.array([n, k_blocks], np.int64), split),
        numpy_helper.from_array(np.ascontiguousarray(blocks.minimums.T), f"{name}.minimums"),
    ]  # (k_blocks, N)
    nodes = [
        helper.make_node(
            "MatMulNBits",
            inputs,
            [both],
            name=name,
            domain="com.microsoft",
            K=k,
            N=n + k_blocks,
            bits=bits,
            block_size=size,
            accuracy_level=ACCURACY_LEVEL,
        ),
        helper.make_node("Split", [both, split], [codes_part, sums_part], name=f"{name}_split", axis=-1),
    ]
    minimums = f"{name}{MINIMUMS_SUFFIX}"
    if two_d:  # (rows, K/block) @ (K/block, N) + codes' (rows, N), one node
        nodes.append(helper.make_node("Gemm", [sums_part, f"{name}.minimums", codes_part], [out], name=minimums))
    else:
        nodes += [
            helper.make_node("MatMul", [sums_part, f"{name}.minimums"], [f"{name}/minimums"], name=minimums),
            helper.make_node("Add", [codes_part, f"{name}/minimums"], [out], name=f"{name}_add_minimums"),
        ]
    return nodes, tensors


def _centered(blocks: ExactBlocks) -> ExactBlocks:
    """4-bit codes with minimums around MatMulNBits' default zero point 8, `d(q - 8) + (m + 8d)`, when every `m + 8d`
    is exact in float32 (else as they are): no zero-point tensor to read, the kernels' symmetric path."""
    center = 2 ** (blocks.bits - 1)
    # subtle: 4-bit only; codes 0..31 around 128 would make the two terms large and cancelling in float32
    if blocks.minimums is None or blocks.zero_point != 0 or blocks.bits != 4 or not CENTER_MINIMUMS:
        return blocks
    shifted = blocks.minimums + np.float32(center) * blocks.scales
    if not np.array_equal(shifted.astype(np.float64) - np.float64(center) * blocks.scales, blocks.minimums):
        return blocks
    return replace(blocks, zero_point=center, minimums=shifted)


def _exact_embeddings(proto: Any, rows: GGUFRows, tensors: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Gather(table, ids) on a table the file holds exactly, in one format without minimums -> GatherBlockQuantized."""
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in proto.graph.initializer}
    done: dict[str, dict[str, Any]] = {}

    def swap(node: Any) -> tuple[list[Any], str, list[Any]] | None:
        table = inits.get(node.input[0]) if node.op_type == "Gather" and node.input else None
        axis = [helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"]
        if table is None or table.data_type not in FLOAT_TYPES or len(table.dims) != 2 or (axis and axis[0] != 0):
            return None
        weight = numpy_helper.to_array(table)  # (rows, width)
        runs, places, why = _exact_runs(rows, weight)
        if runs is not None and (
            len(runs) > 1 or runs[0][0].minimums is not None or runs[0][0].bits not in GATHER_BITS
        ):
            runs = None  # no exact GatherBlockQuantized form for these tables
        _record(tensors, rows, node.name, places, runs is not None)
        if runs is None:
            return None
        blocks = runs[0][0]
        n, k = blocks.codes.shape
        q = pack(
            blocks.codes.reshape(n, -1, blocks.block_size),
            blocks.scales,
            np.full(blocks.scales.shape, blocks.zero_point, np.uint8),
            blocks.bits,
            blocks.block_size,
            k,
        )
        prefix = f"{table.name}_gguf_Q{blocks.bits}"
        new = helper.make_node(
            "GatherBlockQuantized",
            [prefix, node.input[1], f"{prefix}_scales", f"{prefix}_zero_points"],
            list(node.output),
            name=f"{node.name}_gguf",
            domain="com.microsoft",
            bits=blocks.bits,
            block_size=blocks.block_size,
            quantize_axis=1,
            gather_axis=0,
        )
        done[node.name] = {"gguf": sorted({rows.names[t] for t, _ in runs[0][1]}), "format": _describe(blocks)}
        return (
            [new],
            table.name,
            [
                numpy_helper.from_array(q.packed.reshape(n, -1), prefix),
                numpy_helper.from_array(q.scales, f"{prefix}_scales"),
                numpy_helper.from_array(q.zero_points, f"{prefix}_zero_points"),
            ],
        )

    _rewrite_many(proto, swap)
    return done


def _rewrite_many(proto: Any, swap: Any) -> None:
    """quantize._rewrite for a swap that returns a list of nodes in place of one."""
    graph = proto.graph
    extra: dict[str, list[Any]] = {}

    def one(node: Any):
        swapped = swap(node)
        if swapped is None:
            return None
        nodes, weight, tensors = swapped
        extra[nodes[0].name] = nodes[1:]
        return nodes[0], weight, tensors

    _rewrite(proto, one)
    if extra:
        ordered = []
        for node in graph.node:
            ordered.append(node)
            ordered += extra.get(node.name, [])
        graph.ClearField("node")
        graph.node.extend(ordered)


def _record(tensors: dict[str, dict[str, Any]], rows: GGUFRows, node: str, places: list | None, kept: bool) -> None:
    """Note, per GGUF tensor that `node` reads, its type, the nodes that read it and what each kept."""
    for t in sorted({t for t, _ in places or []}):
        entry = tensors.setdefault(rows.names[t], {"type": rows.types[t], "kept_by": [], "fallback_in": []})
        entry["kept_by" if kept else "fallback_in"].append(node)


def _describe(blocks: ExactBlocks) -> dict[str, Any]:
    return {
        "type": blocks.type_name,
        "bits": blocks.bits,
        "block_size": blocks.block_size,
        "zero_point": blocks.zero_point,
        "minimums": blocks.minimums is not None,
    }


def fallback_line(description: dict[str, Any]) -> str | None:
    """The one line naming what the file holds that could not be kept exactly, or None if everything was."""
    fallback = description.get("fallback") or {}
    if not fallback:
        return None
    names = ", ".join(f"{node} ({why.split(': ', 1)[-1]})" for node, why in list(fallback.items())[:4])
    more = f" and {len(fallback) - 4} more" if len(fallback) > 4 else ""
    return f"gguf: {len(fallback)} weight(s) cannot keep the file's codes and fall back to {FALLBACK}: {names}{more}"


def _description(
    targets: list[str],
    head: str,
    kept: dict[str, Any],
    fallback: dict[str, str],
    blocks: dict[str, int],
    embeddings: dict[str, Any],
    tables: list[str],
    tensors: dict[str, Any],
    path: Path,
) -> dict[str, Any]:
    bits_by_node = {name: (max(f["bits"] for f in kept[name]["formats"]) if name in kept else 8) for name in targets}
    block_by_node = {
        name: (min(f["block_size"] for f in kept[name]["formats"]) if name in kept else blocks[name])
        for name in targets
    }
    types = Counter(f["type"] for k in kept.values() for f in k["formats"])
    return {
        "scheme": SCHEME,
        "method": "MatMulNBits with the GGUF file's own codes and scales, integer zero points; per-block minimums "
        "as block sums of the input times the matrix of minimums",
        "source_file": path.name,
        "bits": max(bits_by_node.values()) if bits_by_node else 8,
        "algorithm": "kept from the GGUF file: " + ", ".join(f"{t} ({n} nodes)" for t, n in sorted(types.items())),
        "symmetric": False,
        "accuracy_level": ACCURACY_LEVEL,
        "block_size": Counter(block_by_node.values()).most_common(1)[0][0] if block_by_node else 32,
        "nodes": targets,
        "bits_by_node": bits_by_node,
        "block_size_by_node": block_by_node,
        "lm_head": {"node": head, "bits": bits_by_node.get(head)},
        "kept": kept,
        "fallback": {node: f"{FALLBACK}: {why}" for node, why in fallback.items()},
        "embeddings": {**{name: e["format"]["bits"] for name, e in embeddings.items()}, **{name: 8 for name in tables}},
        "embeddings_kept": embeddings,
        "gguf_tensors": tensors,
        "kept_float": "norms, biases, activations",
    }


def check_gguf_source(scheme: str, gguf_file: str | None, name: str) -> None:
    """`--quantize gguf` reads the codes of a GGUF file: refuse it for any other source before loading anything."""
    if scheme == SCHEME and gguf_file is None:
        raise ExportError(
            f"--quantize gguf keeps the codes of a .gguf file, and {name} is not one; "
            "pass a .gguf MODEL (or none, for the default model) or use --quantize int8 or int4"
        )
