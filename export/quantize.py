"""Weight-only blockwise quantization of every weight MatMul (LM head included) with ONNX Runtime MatMulNBits.

`int8` and `int4` replace each MatMul whose weight is a constant (K, N) matrix by a `com.microsoft.MatMulNBits`
node holding the weight in blocks of BLOCK_SIZE along K, each with its own scale and zero point (int4 keeps
the LM head at 8 bits; see the measurements below). Activations stay fp32; the embedding Gather keeps its fp32
table. A tied LM head often reaches its MatMul through `Transpose(embedding)`, which the stock quantizer skips;
we first fold such a Transpose into a constant so the head is quantized too. This file does not validate accuracy (validate.py measures it).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np

from memgpt_runtime.errors import ExportError

SCHEMES = ("fp32", "int8", "int4")
BLOCK_SIZE = 32
# Measured on SmolLM2-135M (whose GGUF weights are already 4-bit, blocks of 32), perplexity of a 72-token text,
# fp32 25.59: int8 round-to-nearest asymmetric 25.54 (symmetric 25.50 but larger logit drift; accuracy_level 4
# 25.67); int4 round-to-nearest 28.9-32.6, int4 HQQ 26.41, int4 HQQ with an 8-bit head 25.54. So:
#  - int8: round-to-nearest, asymmetric (scale + zero point per block), fp32 compute (accuracy_level 0);
#  - int4: HQQ (half-quadratic optimised scales and float zero points) for the layers, the LM head at int8,
#    as llama.cpp keeps its output matrix at higher precision.
INT8 = {"bits": 8, "algorithm": "rtn", "symmetric": False, "accuracy_level": 0}
INT4 = {"bits": 4, "algorithm": "hqq", "symmetric": False, "accuracy_level": 0}
_FLOATS = {1, 10, 11, 16}  # onnx TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16


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
    fold_transposed_weights(proto)
    _name_unnamed_nodes(proto)
    split_gemms(proto)
    targets = weight_matmuls(proto)
    head = lm_head(proto)
    if scheme == "int8":
        proto = _matmul_nbits(proto, INT8)
        head_settings = INT8
    else:
        proto = _matmul_nbits(proto, INT4, exclude=[head])
        proto = _matmul_nbits(proto, INT8)  # only the head is left
        head_settings = INT8
    left = weight_matmuls(proto)
    done = sum(1 for n in proto.graph.node if n.op_type == "MatMulNBits")
    if left or done != len(targets):
        raise ExportError(
            f"{scheme} quantization left {len(left)} float weight MatMul(s) (e.g. {left[:1]}) and made {done} of "
            f"{len(targets)} MatMulNBits; this graph is not supported by the quantizer"
        )
    settings = INT8 if scheme == "int8" else INT4
    return proto, {
        "scheme": scheme,
        "method": "onnxruntime MatMulNBits, weight-only, blockwise along K",
        **settings,
        "block_size": BLOCK_SIZE,
        "nodes": targets,
        "lm_head": {"node": head, **head_settings},
        "kept_float": "embedding Gather, norms, biases, activations",
    }


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


def _matmul_nbits(proto: Any, settings: dict[str, Any], exclude: list[str] = ()) -> Any:
    from onnxruntime.quantization.matmul_nbits_quantizer import HQQWeightOnlyQuantConfig, MatMulNBitsQuantizer

    algo = None
    if settings["algorithm"] == "hqq":
        algo = HQQWeightOnlyQuantConfig(block_size=BLOCK_SIZE, bits=settings["bits"], op_types_to_quantize=("MatMul",))
    quant_logger = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = quant_logger.level
    quant_logger.setLevel(logging.WARNING)  # it logs one INFO line per node
    try:
        quantizer = MatMulNBitsQuantizer(
            proto,
            bits=settings["bits"],
            block_size=BLOCK_SIZE,
            is_symmetric=settings["symmetric"],
            accuracy_level=settings["accuracy_level"] or None,
            nodes_to_exclude=list(exclude),
            op_types_to_quantize=("MatMul",),
            algo_config=algo,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # HQQ warns that it wraps read-only numpy arrays in torch tensors
            quantizer.process()
    finally:
        quant_logger.setLevel(level)
    return quantizer.model.model


def weight_matmuls(proto: Any) -> list[str]:
    """Names of MatMul/Gemm nodes that multiply by a constant float matrix (what weight quantization targets)."""
    floats = {t.name for t in proto.graph.initializer if t.data_type in _FLOATS and len(t.dims) == 2}
    return [n.name for n in proto.graph.node if n.op_type in ("MatMul", "Gemm") and any(i in floats for i in n.input[:2])]


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
        if weight is None or not plain or len(weight.dims) != 2 or weight.data_type not in _FLOATS:
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


def _name_unnamed_nodes(proto: Any) -> None:
    # the manifest lists quantized nodes by name, and the quantizer names its nodes after the originals
    seen = set()
    for index, node in enumerate(proto.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}"
        seen.add(node.name)
