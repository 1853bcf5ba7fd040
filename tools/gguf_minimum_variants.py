"""Rewrite a `--quantize gguf` folder without its minimum nodes, to time what any form of them can save.

Usage: .venv/bin/python tools/gguf_minimum_variants.py SRC_FOLDER OUT_FOLDER nomin
SRC_FOLDER is a gguf export whose minimum groups are `MatMulNBits (N + K/block columns) -> Split -> Gemm(block
sums, minimums, C = codes)` (a fused graph of 2-D rows) or `... -> Split -> MatMul -> Add` (a 3-D graph), as
export/gguf_quantize.py writes them. `nomin` removes the minimum nodes and drops the block-sum columns: wrong
numbers, the bound of what any form of the minimum term can save. (The other forms measured, `reduce` and
`rows2d`, are in docs/gguf.md; `rows2d` is what the export now writes.)
The rest of the folder is copied, its manifest with the new file sizes; the rest of the manifest still
describes the source graph.
"""

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from export.gguf_quantize import MINIMUMS_SUFFIX
from tools.variant_folder import write_variant


def groups(graph):
    """(MatMulNBits, Split, [minimum nodes], output of the group) of every minimum group."""
    by_output = {o: n for n in graph.node for o in n.output}
    readers = {}
    for n in graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    found = []
    for minimum in graph.node:
        if not minimum.name.endswith(MINIMUMS_SUFFIX) or minimum.op_type not in ("Gemm", "MatMul"):
            continue
        split = by_output[minimum.input[0]]
        nbits = by_output[split.input[0]]
        if minimum.op_type == "Gemm":
            found.append((nbits, split, [minimum], minimum.output[0]))
        else:
            (add,) = readers[minimum.output[0]]
            found.append((nbits, split, [minimum, add], add.output[0]))
    return found


def set_attr(node, name, value):
    for a in node.attribute:
        if a.name == name:
            node.attribute.remove(a)
            break
    node.attribute.append(helper.make_attribute(name, value))


def drop_sum_columns(nbits, inits, n):
    """Keep the first n output columns of MatMulNBits `nbits` (its codes), dropping the block-sum columns."""
    for i in (1, 2):
        t = inits[nbits.input[i]]
        a = numpy_helper.to_array(t)
        t.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(a[:n]), t.name))
    set_attr(nbits, "N", n)


def without_minimums(proto):
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    remove = set()
    for nbits, split, minimum_nodes, out in groups(graph):
        n = int(numpy_helper.to_array(inits[split.input[1]])[0])
        drop_sum_columns(nbits, inits, n)
        nbits.output[0] = out
        remove |= {split.name, *(m.name for m in minimum_nodes)}
    kept_nodes = [node for node in graph.node if node.name not in remove]
    graph.ClearField("node")
    graph.node.extend(kept_nodes)


def main():
    src, out, variant = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    if variant != "nomin":
        raise SystemExit(f"unknown variant {variant}; the one left is nomin")
    proto = onnx.load(str(src / "model.onnx"))
    without_minimums(proto)
    write_variant(proto, src, out)  # the initializers the removed nodes read go with them
    print(f"{variant}: wrote {out}")


if __name__ == "__main__":
    main()
