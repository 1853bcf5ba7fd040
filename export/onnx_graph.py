"""Export a loaded causal LM to one ONNX decoder graph with a KV cache, and read back its input/output names.

optimum's "text-generation-with-past" export gives a single graph that takes `past_key_values.{i}.key/value`
of shape (batch, kv_heads, past_len, head_size), also with past_len 0 for the prompt, and returns `logits`
(batch, seq, vocab) and `present.{i}.key/value` (batch, kv_heads, past_len + seq, head_size).
Running optimum and writing graphs (one file, or weights in `<file>.data` past 2GB) serve the encoder-decoder
export too (`seq2seq_graph.py`). This file does not validate numbers or quantize; it checks only that the
graph has the expected shape.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

from memgpt_runtime.errors import ExportError, first_line
from memgpt_runtime.manifest import GraphSpec, KVCacheSpec, layer_names

from .architectures import ModelShape
from .graph_spec import PAST_KEY, PAST_VALUE, PRESENT_KEY, PRESENT_VALUE, DecoderGraph

MODEL_FILE = "model.onnx"
EXTERNAL_DATA_FILE = "model.onnx.data"  # save_onnx names it after the graph: `<graph file>.data`
PROTOBUF_LIMIT = 2**31 - 1  # bytes; a larger model must keep its weights in an external data file


def export_onnx(
    model: Any, workdir: Path, task: str = "text-generation-with-past", produces: str = MODEL_FILE, **options: Any
) -> Path:
    """Export `model` with optimum's `task` into `workdir`; return the path of the fp32 graph `produces`."""
    from optimum.exporters.onnx import onnx_export_from_model

    workdir.mkdir(parents=True, exist_ok=True)
    quiet = [logging.getLogger(name) for name in ("optimum", "transformers", "torch.onnx")]
    levels = [log.level for log in quiet]
    # subtle: optimum sets `use_cache` on the configs it exports (a T5 encoder's too, which then refuses to run);
    # restore them so the model validates afterwards as it was loaded
    configs = {
        id(m.config): (m.config, getattr(m.config, "use_cache", None)) for m in model.modules() if hasattr(m, "config")
    }
    try:
        for log in quiet:
            log.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python control flow are expected here
            onnx_export_from_model(model, workdir, task=task, do_validation=False, **options)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(
            f"ONNX export failed ({type(exc).__name__}: {first_line(exc)}); this model may need a newer optimum"
        ) from None
    finally:
        for log, level in zip(quiet, levels):
            log.setLevel(level)
        for config, use_cache in configs.values():
            if use_cache is not None:
                config.use_cache = use_cache
    path = workdir / produces
    if not path.is_file():
        raise ExportError(f"optimum wrote no {produces} in {workdir}; this model may need a newer optimum")
    return path


def read_decoder_graph(path: Path, shape: ModelShape) -> DecoderGraph:
    """Read the graph's names and check them against the architecture's shape (layers, KV heads, head size)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    inputs = {i.name: tensor_dims(i) for i in proto.graph.input}
    outputs = {o.name: tensor_dims(o) for o in proto.graph.output}
    expected = layer_names(shape.num_layers, PAST_KEY, PAST_VALUE)
    missing = [name for name in ["input_ids", *expected] if name not in inputs]
    missing += [name for name in ["logits"] if name not in outputs]
    if missing:
        raise ExportError(
            f"the exported graph lacks {', '.join(missing[:4])}; this model's ONNX export is not supported"
        )
    past = inputs[PAST_KEY.format(i=0)]  # (batch, kv_heads, past_len, head_size)
    if not isinstance(past[1], int) or not isinstance(past[3], int):
        raise ExportError(
            f"the exported KV cache is {past}, without fixed heads and head size; this export is not supported"
        )
    if shape.num_kv_heads and (past[1] != shape.num_kv_heads or past[3] != shape.head_size):  # 0: read from the graph
        raise ExportError(
            f"the exported KV cache is {past}, expected (batch, {shape.num_kv_heads}, past_len, {shape.head_size}); "
            "the architecture entry disagrees with the graph"
        )
    vocab = outputs["logits"][2]
    if not isinstance(vocab, int):
        raise ExportError("the exported logits have no fixed vocabulary dimension; this export is not supported")
    graph = GraphSpec(
        input_ids="input_ids",
        attention_mask="attention_mask" if "attention_mask" in inputs else None,
        position_ids="position_ids" if "position_ids" in inputs else None,
        logits="logits",
    )
    kv = KVCacheSpec(
        layout="concat",
        num_layers=shape.num_layers,
        num_kv_heads=past[1],
        head_size=past[3],
        past_key=PAST_KEY,
        past_value=PAST_VALUE,
        present_key=PRESENT_KEY,
        present_value=PRESENT_VALUE,
    )
    return DecoderGraph(graph, kv, vocab)


def save_onnx(proto: Any, folder: Path, name: str = MODEL_FILE) -> str:
    """Write `proto` as `folder/name`: one file below 2GB, else weights in `name.data` (`model.onnx.data`)."""
    import onnx

    path = folder / name
    large = proto.ByteSize() > PROTOBUF_LIMIT if _all_data_inline(proto) else True
    if large:
        onnx.save_model(
            proto,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=f"{name}.data",
            size_threshold=1024,
        )
    else:
        onnx.save_model(proto, str(path))
    return name


def move_fp32_graph(path: Path, folder: Path, name: str = MODEL_FILE) -> str:
    """Move the exported fp32 graph into `folder` as `name`: one file if it fits, else with its external data."""
    import onnx

    data_files = [p for p in path.parent.iterdir() if p.name != path.name and p.name.startswith(path.name)]
    if not data_files:
        shutil.move(str(path), str(folder / name))
        return name
    return save_onnx(onnx.load(str(path)), folder, name)  # rewrite external data under our own name (or inline it)


def _all_data_inline(proto: Any) -> bool:
    from onnx.external_data_helper import uses_external_data

    return not any(uses_external_data(t) for t in proto.graph.initializer)


def tensor_dims(value_info: Any) -> tuple:
    """The shape of a graph input or output: ints where fixed, dimension names where symbolic."""
    return tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in value_info.type.tensor_type.shape.dim)
