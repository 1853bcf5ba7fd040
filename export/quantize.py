"""Weight-only blockwise quantization of every weight MatMul (LM head included) into onnxruntime's MatMulNBits.

`int8` and `int4` replace each MatMul whose weight is a constant (K, N) matrix by a `com.microsoft.MatMulNBits`
node holding the weight in blocks of 32 or 64 along K (`block_size_for`), each with its own scale and integer
zero point (`blockwise.py`), computed with int8 activations (accuracy_level 4, onnxruntime's fast path); `int4`
first measures the inputs of every weight on text the model writes itself (`calibrate.py`) to guide its rounding.
A tied LM head often reaches its MatMul through `Transpose(embedding)` or a `Gemm` with transB, which the stock
quantizer skips; those are folded into a constant first so the head is quantized too. Embedding tables become
8-bit `GatherBlockQuantized` lookups, which quarters the largest tensor of a small model's memory. Which bits and
block sizes where, and the alternatives measured against them: docs/quantization.md. This file does not
validate accuracy (validate.py measures it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memgpt_runtime.errors import ExportError

from .blockwise import quantize as quantize_weight
from .calibrate import input_grams
from .gptq import gptq

SCHEMES = ("fp32", "int8", "int4", "gguf")  # gguf: gguf_quantize.py, from the GGUF file's own codes
BLOCK_SIZE = 32
# blocks of 64 for 8-bit weights: fewer scales to read per token, for no measurable loss at 8 bits; 4-bit ones
# stay in blocks of 32, the GGUF files' own (docs/quantization.md, docs/int4-quality.md)
WIDE_BLOCK_SIZE = 64
ACCURACY_LEVEL = 4  # int8 activations: the fast kernels (a float-activation 8-bit path is ~50x slower here)
# attention input projections: 8-bit in int4 when no importance was measured for them
EIGHT_BIT_UNCALIBRATED = ("qkv_proj", "q_proj", "k_proj", "v_proj", "c_attn")
EMBEDDING_BITS = 8
FLOAT_TYPES = {1, 10, 11, 16}  # onnx TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16


def check_scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise ExportError(f"unknown quantization {scheme!r}; choose one of {', '.join(SCHEMES)}")
    return scheme


def fp32_description() -> dict[str, Any]:
    return {"scheme": "fp32", "bits": 32, "block_size": None, "nodes": []}


def quantize_graph(proto: Any, scheme: str) -> tuple[Any, dict[str, Any]]:
    """Quantize `proto` (an fp32 onnx ModelProto, `logits` from the head) in place; return it and a manifest dict."""
    check_scheme(scheme)
    if scheme == "fp32":
        return proto, fp32_description()
    if scheme == "gguf":
        raise ExportError("gguf quantization needs the GGUF file: call export.gguf_quantize.quantize_gguf")
    fold_transposed_weights(proto)
    name_unnamed_nodes(proto)
    split_gemms(proto)
    targets = weight_matmuls(proto)
    head = lm_head(proto)
    grams, calibration = input_grams(proto, targets, full=[head]) if scheme == "int4" else ({}, None)
    plan = {name: bits_for(name, head, scheme, name in grams) for name in targets}  # node -> (bits, method)
    blocks = replace_with_matmul_nbits(proto, plan, grams)
    tables = quantize_embeddings(proto)
    left = weight_matmuls(proto)
    done = sum(1 for n in proto.graph.node if n.op_type == "MatMulNBits")
    if left or done != len(targets):
        raise ExportError(
            f"{scheme} quantization left {len(left)} float weight MatMul(s) (e.g. {left[:1]}) and made {done} of "
            f"{len(targets)} MatMulNBits; this graph is not supported by the quantizer"
        )
    description = {
        "scheme": scheme,
        "method": "MatMulNBits, weight-only, blockwise along K, integer zero points",
        "bits": 8 if scheme == "int8" else 4,
        "algorithm": algorithm_note(plan, head),
        "symmetric": False,
        "accuracy_level": ACCURACY_LEVEL,
        "block_size": BLOCK_SIZE,
        "nodes": targets,
        "bits_by_node": {name: bits for name, (bits, _) in plan.items()},
        "block_size_by_node": blocks,
        "lm_head": {"node": head, "bits": plan[head][0]},
        "embeddings": {name: EMBEDDING_BITS for name in tables},
        "kept_float": "norms, biases, activations",
    }
    if calibration is not None:
        description["calibration"] = calibration
    return proto, description


def bits_for(node: str, head: str, scheme: str, calibrated: bool = False) -> tuple[int, str]:
    """(bits, method) for one weight MatMul under `scheme`; `calibrated`: its input's Gram matrix was measured.

    docs/quantization.md has the measurements behind the choice.
    """
    if scheme == "int8":
        return 8, "rtn"
    if calibrated:
        return 4, "gptq" if node == head else "weighted"
    if node == head or any(part in node for part in EIGHT_BIT_UNCALIBRATED):
        return 8, "rtn"
    return 4, "searched"


METHOD_NAMES = {"rtn": "rtn", "searched": "searched", "weighted": "importance-weighted searched", "gptq": "GPTQ"}


def algorithm_note(plan: dict[str, tuple[int, str]], head: str) -> str:
    """The manifest's one-line summary of `plan`, e.g. "importance-weighted searched 4-bit, GPTQ 4-bit head"."""
    layers = dict.fromkeys(choice for name, choice in plan.items() if name != head)
    parts = [f"{METHOD_NAMES[method]} {bits}-bit" for bits, method in layers]
    if head in plan and plan[head] not in layers:
        bits, method = plan[head]
        parts.append(f"{METHOD_NAMES[method]} {bits}-bit head")
    return ", ".join(parts)


def block_size_for(bits: int, k: int) -> int:
    """Block size along K for one weight MatMul of `bits` bits with K input features, however it is rounded.

    WIDE_BLOCK_SIZE for 8-bit weights when K is a whole number of those blocks; BLOCK_SIZE otherwise (every 4-bit
    weight: blocks of 64 cost the importance-weighted layers +3 to +9 points of perplexity, docs/int4-quality.md).
    """
    return WIDE_BLOCK_SIZE if bits == 8 and k % WIDE_BLOCK_SIZE == 0 else BLOCK_SIZE


def lm_head(proto: Any) -> str:
    """The weight MatMul whose (K, N) weight has N = the logits' vocabulary size (else the last weight MatMul)."""
    targets = weight_matmuls(proto)
    if not targets:
        raise ExportError("the graph has no weight MatMul to quantize; export it with --quantize fp32")
    logits = [o for o in proto.graph.output if o.name == "logits"]
    vocab = logits[0].type.tensor_type.shape.dim[-1].dim_value if logits else 0
    dims = {t.name: tuple(t.dims) for t in proto.graph.initializer}
    nodes = {n.name: n for n in proto.graph.node}
    heads = [name for name in targets if any(dims.get(i, (0, 0))[-1] == vocab for i in nodes[name].input[1:2])]
    return heads[-1] if heads else targets[-1]


def replace_with_matmul_nbits(
    proto: Any, plan: dict[str, tuple[int, str]], grams: dict[str, np.ndarray]
) -> dict[str, int]:
    """Swap each planned MatMul for a MatMulNBits node; `grams` per node drive the GPTQ ones ((K, K)) and the
    importance-weighted ones (the diagonal (K,) or the matrix it comes from).

    Returns the block size chosen for each node.
    """
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in proto.graph.initializer}
    blocks: dict[str, int] = {}

    def swap(node: Any) -> tuple[Any, str, list[Any]] | None:
        if node.name not in plan:
            return None
        bits, method = plan[node.name]
        weight = numpy_helper.to_array(inits[node.input[1]])  # (K, N)
        block = blocks[node.name] = block_size_for(bits, weight.shape[0])
        w = np.ascontiguousarray(weight.T)  # (N, K)
        if method == "gptq" and w.shape[1] % block == 0:
            q = gptq(w, grams[node.name], bits, block)
        elif method in ("gptq", "weighted"):  # searched codes, each channel weighed by its mean square activation
            gram = grams[node.name]
            q = quantize_weight(w, bits, block, "searched", gram if gram.ndim == 1 else np.diag(gram))
        else:
            q = quantize_weight(w, bits, block, method)
        prefix = f"{node.input[1]}_Q{bits}"
        new = helper.make_node(
            "MatMulNBits",
            [node.input[0], prefix, f"{prefix}_scales", f"{prefix}_zero_points"],
            list(node.output),
            name=f"{node.name}_Q{bits}",
            domain="com.microsoft",
            K=q.k,
            N=q.n,
            bits=bits,
            block_size=block,
            accuracy_level=ACCURACY_LEVEL,
        )
        return new, node.input[1], _tensors(prefix, q.packed, q)

    _rewrite(proto, swap)
    return blocks


def quantize_embeddings(proto: Any) -> list[str]:
    """Replace each `Gather(table, ids)` on a constant (rows, width) float table by an 8-bit GatherBlockQuantized."""
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in proto.graph.initializer}
    done = []

    def swap(node: Any) -> tuple[Any, str, list[Any]] | None:
        table = inits.get(node.input[0]) if node.op_type == "Gather" and node.input else None
        axis = [helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"]
        if table is None or table.data_type not in FLOAT_TYPES or len(table.dims) != 2 or (axis and axis[0] != 0):
            return None
        if (
            table.dims[1] % BLOCK_SIZE
        ):  # GatherBlockQuantized would return the padded width (T5's (buckets, heads) bias)
            return None
        weight = numpy_helper.to_array(table)  # (rows, width)
        q = quantize_weight(weight, EMBEDDING_BITS, BLOCK_SIZE, "rtn")
        prefix = f"{table.name}_Q{EMBEDDING_BITS}"
        new = helper.make_node(
            "GatherBlockQuantized",
            [prefix, node.input[1], f"{prefix}_scales", f"{prefix}_zero_points"],
            list(node.output),
            name=f"{node.name}_Q{EMBEDDING_BITS}",
            domain="com.microsoft",
            bits=EMBEDDING_BITS,
            block_size=BLOCK_SIZE,
            quantize_axis=1,
            gather_axis=0,
        )
        done.append(node.name)
        return new, table.name, _tensors(prefix, q.packed.reshape(weight.shape[0], -1), q)

    _rewrite(proto, swap)
    return done


def _tensors(prefix: str, data: np.ndarray, q: Any) -> list[Any]:
    from onnx import numpy_helper

    return [
        numpy_helper.from_array(data, prefix),
        numpy_helper.from_array(q.scales, f"{prefix}_scales"),
        numpy_helper.from_array(q.zero_points, f"{prefix}_zero_points"),
    ]


def _rewrite(proto: Any, swap: Any) -> None:
    """Replace nodes for which `swap(node)` returns (new node, weight it read, new tensors); drop unread weights."""
    graph = proto.graph
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    nodes, added = [], []
    for node in graph.node:
        swapped = swap(node)
        if swapped is None:
            nodes.append(node)
            continue
        new, weight, tensors = swapped
        nodes.append(new)
        added += tensors
        readers[weight] -= 1
    kept = [t for t in graph.initializer if readers.get(t.name, 0) > 0 or t.name not in readers]
    graph.ClearField("node")
    graph.node.extend(nodes)
    graph.ClearField("initializer")
    graph.initializer.extend(kept + added)


def weight_matmuls(proto: Any) -> list[str]:
    """Names of MatMul/Gemm nodes that multiply by a constant float matrix (what weight quantization targets)."""
    floats = {t.name for t in proto.graph.initializer if t.data_type in FLOAT_TYPES and len(t.dims) == 2}
    return [
        n.name for n in proto.graph.node if n.op_type in ("MatMul", "Gemm") and any(i in floats for i in n.input[:2])
    ]


def fold_transposed_weights(proto: Any) -> int:
    """Replace `MatMul(x, Transpose(W))` with `MatMul(x, W_transposed)` for initializers W; return the count.

    The original W stays for its other users (the embedding Gather of a tied head); the Transpose node goes.
    """
    from onnx import numpy_helper

    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    folded = 0
    for node in list(graph.node):
        if node.op_type != "Transpose" or node.input[0] not in inits:
            continue
        weight = inits[node.input[0]]
        perm = [a.ints for a in node.attribute if a.name == "perm"]
        if len(weight.dims) != 2 or (perm and list(perm[0]) != [1, 0]):
            continue
        users = consumers.get(node.output[0], [])
        if not users or any(u.op_type != "MatMul" or u.input[1] != node.output[0] for u in users):
            continue
        name = f"{weight.name}_transposed_const"
        array = np.ascontiguousarray(numpy_helper.to_array(weight).T)  # (K, N) as MatMul wants it
        graph.initializer.append(numpy_helper.from_array(array, name))
        for user in users:
            user.input[1] = name
        graph.node.remove(node)
        folded += 1
    return folded


def split_gemms(proto: Any) -> int:
    """Rewrite `Gemm(A, W, bias)` with a constant W as `MatMul(A, W) + bias` (MatMulNBits replaces only MatMul).

    GPT-2's Conv1D layers export as Gemm. Only the plain form (alpha = beta = 1, transA = 0) is rewritten;
    transB = 1 is folded into the constant. The MatMul keeps the Gemm's name. Returns the count.
    """
    from onnx import helper, numpy_helper

    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    rewritten, nodes = 0, []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        weight = inits.get(node.input[1]) if node.op_type == "Gemm" and len(node.input) > 1 else None
        if weight is None or not plain or len(weight.dims) != 2 or weight.data_type not in FLOAT_TYPES:
            nodes.append(node)
            continue
        b = node.input[1]
        if attrs.get("transB", 0):
            b = f"{weight.name}_transposed_const"
            array = np.ascontiguousarray(numpy_helper.to_array(weight).T)  # (K, N)
            graph.initializer.append(numpy_helper.from_array(array, b))
        has_bias = len(node.input) > 2 and node.input[2]
        product = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], b], [product], name=node.name))
        if has_bias:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}_bias"))
        rewritten += 1
    graph.ClearField("node")
    graph.node.extend(nodes)
    return rewritten


def name_unnamed_nodes(proto: Any) -> None:
    # the manifest lists quantized nodes by name, and the quantizer names its nodes after the originals
    seen = set()
    for index, node in enumerate(proto.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}"
        seen.add(node.name)
