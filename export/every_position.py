"""Let a fused decoder graph return the logits of every position of a run, not only the one at `last_index`.

The fused graphs gather one position per row (`GatherND(stream, last_index)`) before the final norm and LM head,
so a prompt never pays for logits it does not read. Perplexity needs the logits of every position of a window,
and speculative decoding those of the K + 1 tokens it checks in one run. This pass puts that gather in an `If`:
when every `last_index` is negative (`ALL_POSITIONS`), the head sees the whole (batch * sequence, hidden)
stream and the graph returns (batch * sequence, vocab) logits, row-major; otherwise it gathers as before and
returns (batch, vocab). Decoding keeps its shapes, its inputs and its cost (docs/perplexity.md measures it).
The manifest records the value (`GraphSpec.all_positions`). Graphs without that gather are left alone.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

ALL_POSITIONS = -1  # the `last_index` value that asks for every position


def enable_every_position(proto: Any) -> int | None:
    """Rewrite `proto` in place as above; ALL_POSITIONS if it did, None if the graph has no last_index gather."""
    from onnx import TensorProto, helper

    graph = proto.graph
    inputs = {i.name for i in graph.input}
    if "last_index" not in inputs:
        return None
    producers = {out: node for node in graph.node for out in node.output}
    gather = next(
        (
            n
            for n in graph.node
            if n.op_type == "GatherND"
            and len(n.input) == 2
            and producers.get(n.input[1]) is not None
            and producers[n.input[1]].op_type == "Unsqueeze"
            and producers[n.input[1]].input[0] == "last_index"
        ),
        None,
    )
    if gather is None:
        return None
    stream, index = gather.input
    picked = gather.output[0]  # (batch, hidden), or (batch * sequence, hidden) for every position

    def branch(name: str, node: Any) -> Any:
        out = helper.make_tensor_value_info(f"{name}/out", TensorProto.FLOAT, [None, None])
        node.output[0] = f"{name}/out"
        return helper.make_graph([node], name, [], [out])

    every = helper.make_node("Flatten", [stream], ["x"], name="every_position/flatten", axis=2)  # (batch * seq, hidden)
    one = helper.make_node("GatherND", [stream, index], ["x"], name="every_position/last", batch_dims=1)
    nodes = [
        helper.make_node("ReduceMin", ["last_index"], ["every_position/min"], name="every_position/min", keepdims=0),
        helper.make_node(
            "Less", ["every_position/min", "every_position/zero"], ["every_position/all"], name="every_position/all"
        ),
        helper.make_node(
            "If",
            ["every_position/all"],
            [picked],
            name="every_position",
            then_branch=branch("every_position_then", every),
            else_branch=branch("every_position_else", one),
        ),
    ]
    graph.initializer.append(helper.make_tensor("every_position/zero", TensorProto.INT64, [], [0]))
    for output in graph.output:
        if output.name == "logits":  # (rows, vocab): batch rows, or batch * sequence rows
            output.type.tensor_type.shape.dim[0].dim_param = "rows"
    position = list(graph.node).index(gather)
    kept = [n for n in graph.node if n is not gather]
    graph.ClearField("node")
    graph.node.extend(kept[:position] + nodes + kept[position:])
    return ALL_POSITIONS


def with_every_position(folder: Path, manifest: Any) -> Any:
    """Rewrite the decoder graph of the export in `folder` as above; the manifest, with `graph.all_positions` set
    if it applied. Only the graph's nodes are rewritten: weights in an external data file are not read."""
    import onnx

    if manifest.kind != "decoder-only" or manifest.graph.last_index is None or manifest.graph.all_positions is not None:
        return manifest
    path = Path(folder) / manifest.model_file
    proto = onnx.load(str(path), load_external_data=False)
    value = enable_every_position(proto)
    if value is None:
        return manifest
    onnx.save_model(proto, str(path))
    return replace(manifest, graph=replace(manifest.graph, all_positions=value))
