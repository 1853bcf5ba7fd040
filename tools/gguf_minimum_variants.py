"""Rewrite a `--quantize gguf` folder's minimum nodes into another form, to time the forms against each other.

Usage: .venv/bin/python tools/gguf_minimum_variants.py SRC_FOLDER OUT_FOLDER VARIANT
SRC_FOLDER is a gguf export whose minimum groups are `MatMulNBits (N + K/block columns) -> Split -> MatMul(block
sums, minimums) -> Add` (export/gguf_quantize.py). Variants:
  nomin   the minimum nodes removed and the block-sum columns dropped: wrong numbers, the bound of what any
          form of the minimum term can save
  reduce  MatMulNBits of N columns; block sums by Reshape + ReduceSum of the float input; MatMul; Add
  rows2d  the residual stream as 2-D rows (batch * sequence, hidden): Flatten after the embedding and after each
          attention, back to 3-D (Reshape to [batch, sequence, -1]) only for GroupQueryAttention's input and the
          last-position If; each minimum group is `Split` then `Gemm(block sums, minimums, C = codes)`
The folder's manifest (with the new file sizes) and tokenizer are copied; the rest of the manifest still
describes the source graph.
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from memgpt_runtime.integrity import record_files


def groups(graph):
    """(MatMulNBits, Split, MatMul, Add) of every minimum group."""
    by_output = {o: n for n in graph.node for o in n.output}
    found = []
    for add in graph.node:
        if add.op_type != "Add" or not add.name.endswith("_add_minimums"):
            continue
        minimum = by_output[add.input[1]]
        split = by_output[add.input[0]]
        nbits = by_output[split.input[0]]
        found.append((nbits, split, minimum, add))
    return found


def attr(node, name):
    return next(helper.get_attribute_value(a) for a in node.attribute if a.name == name)


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


AGNOSTIC = {
    "SimplifiedLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "MatMulNBits",
    "Split",
    "QuickGelu",
    "Mul",
    "Add",
    "Gemm",
    "MatMul",
}  # ops that take (rows, width) as well as (batch, sequence, width)


def rows2d(proto):
    """The `rows2d` variant (see the module docstring), in place."""
    graph = proto.graph
    nodes = list(graph.node)
    for nbits, split, minimum, add in groups(graph):
        gemm = helper.make_node(
            "Gemm", [split.output[1], minimum.input[1], split.output[0]], [add.output[0]], name=f"{nbits.name}_gemm"
        )
        nodes[nodes.index(minimum)] = gemm
        nodes.remove(add)
    seeds = [n.output[0] for n in nodes if n.op_type in ("GatherBlockQuantized", "GroupQueryAttention")]
    out = [
        helper.make_node("Shape", ["input_ids"], ["rows2d/bs"], name="rows2d_bs"),
        helper.make_node(
            "Concat", ["rows2d/bs", "rows2d.minus_one"], ["rows2d/shape3d"], name="rows2d_shape3d", axis=0
        ),
    ]
    graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), "rows2d.minus_one"))
    flat = {t: f"{t}/2d" for t in seeds}
    twod = set(flat.values())
    three = {}  # 2-D tensor -> its 3-D view

    def view3d(t):
        if t not in three:
            three[t] = f"{t}/3d"
            out.append(helper.make_node("Reshape", [t, "rows2d/shape3d"], [three[t]], name=f"{t}_3d"))
        return three[t]

    for node in nodes:
        for i, name in enumerate(node.input):
            if name in flat:
                node.input[i] = flat[name]
        if node.op_type == "GroupQueryAttention" and node.input[0] in twod:
            node.input[0] = view3d(node.input[0])
        if node.op_type == "If":
            for branch in (a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH):
                for inner in branch.node:
                    for i, name in enumerate(inner.input):
                        if name in flat:
                            name = inner.input[i] = flat[name]
                        if name in twod:
                            inner.input[i] = view3d(name)
        out.append(node)
        if node.op_type in AGNOSTIC and node.input and node.input[0] in twod:
            twod |= {o for o in node.output if o}
        for t in node.output:
            if t in flat:
                out.append(helper.make_node("Flatten", [t], [flat[t]], name=f"{t}_2d", axis=-1))
    graph.ClearField("node")
    graph.node.extend(out)
    graph.ClearField("value_info")  # recorded 3-D shapes of tensors that are now 2-D


def rewrite(proto, variant):
    graph = proto.graph
    if variant == "rows2d":
        return rows2d(proto)
    inits = {t.name: t for t in graph.initializer}
    remove, insert = set(), {}  # names of nodes to drop; node name -> nodes to put after it
    extra_inits = []
    for nbits, split, minimum, add in groups(graph):
        n, kb = (int(v) for v in numpy_helper.to_array(inits[split.input[1]]))
        size = attr(nbits, "block_size")
        if variant == "nomin":
            drop_sum_columns(nbits, inits, n)
            nbits.output[0] = add.output[0]
            remove |= {split.name, minimum.name, add.name}
        elif variant == "reduce":
            drop_sum_columns(nbits, inits, n)
            nbits.output[0] = split.output[0]  # the codes' product
            shape = f"{nbits.name}.blocks_shape"
            extra_inits.append(numpy_helper.from_array(np.array([0, 0, kb, size], np.int64), shape))
            axes = f"{nbits.name}.last_axis"
            extra_inits.append(numpy_helper.from_array(np.array([-1], np.int64), axes))
            blocks = f"{nbits.name}/x_blocks"
            insert[nbits.name] = [
                helper.make_node("Reshape", [nbits.input[0], shape], [blocks], name=f"{nbits.name}_blocks"),
                helper.make_node(
                    "ReduceSum", [blocks, axes], [split.output[1]], name=f"{nbits.name}_block_sums", keepdims=0
                ),
            ]
            remove.add(split.name)
        else:
            raise SystemExit(f"unknown variant {variant}")
    nodes = []
    for node in graph.node:
        if node.name not in remove:
            nodes.append(node)
        nodes += insert.get(node.name, [])
    graph.ClearField("node")
    graph.node.extend(nodes)
    graph.initializer.extend(extra_inits)
    used = {i for n in graph.node for i in n.input}
    for sub in (a.g for n in graph.node for a in n.attribute if a.type == onnx.AttributeProto.GRAPH):
        used |= {i for n in sub.node for i in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    graph.ClearField("initializer")
    graph.initializer.extend(kept)


def main():
    src, out, variant = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    proto = onnx.load(str(src / "model.onnx"))
    rewrite(proto, variant)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "tokenizer.json", out / "tokenizer.json")
    onnx.save_model(proto, str(out / "model.onnx"))
    manifest = json.loads((src / "manifest.json").read_text())
    manifest["files"] = record_files(out)  # the load checks the sizes
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    print(f"{variant}: wrote {out}")


if __name__ == "__main__":
    main()
