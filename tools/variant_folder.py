"""Write an edited graph as a model folder the runtime loads: the experiment tools' common last step."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx

from memgpt_runtime.integrity import record_files


def write_variant(proto, source: Path, out: Path) -> None:
    """`out` = a copy of the folder `source` with `proto` as its graph, the initializers no node reads dropped and
    the manifest's file records (which every load checks) remade; the rest of the manifest is the source's."""
    used = {name for node in proto.graph.node for name in node.input}
    for branch in (a.g for node in proto.graph.node for a in node.attribute if a.type == onnx.AttributeProto.GRAPH):
        used |= {name for node in branch.node for name in node.input}
    kept = [t for t in proto.graph.initializer if t.name in used]
    proto.graph.ClearField("initializer")
    proto.graph.initializer.extend(kept)
    if out.resolve() != source.resolve():
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(source, out)
    onnx.save(proto, str(out / "model.onnx"))
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"] = record_files(out)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
