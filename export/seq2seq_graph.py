"""Export an encoder-decoder LM (T5, BART, Marian) to two ONNX graphs: the encoder, and the decoder with past.

optimum's "text2text-generation-with-past" export (`no_post_process`, so nothing is merged) gives three graphs.
We keep two:
- `decoder_with_past_model.onnx` serves every step, the first one too (with a self-attention past of length 0):
  `input_ids` (batch, 1), `encoder_attention_mask` (batch, src), `past_key_values.{i}.decoder.key/value`
  (batch, heads, past, head_size) and `past_key_values.{i}.encoder.key/value` (batch, heads, src, head_size)
  in; `logits` (batch, 1, vocab) and `present.{i}.decoder.key/value` (batch, heads, past + 1, head_size) out.
- `encoder_model.onnx`, to which we append each decoder layer's cross-attention key/value projections:
  last_hidden_state -> MatMul (+ bias) -> Reshape (0, -1, heads, head_size) -> Transpose (0, 2, 1, 3) ->
  `cross.{i}.key/value`, so the runtime computes them once per source instead of once per step. The weights
  come from the PyTorch modules the architecture registry names. `last_hidden_state` is no longer an output.
(optimum's `decoder_model.onnx` also computes these projections, but its reshapes depend on decoder shapes and
it carries the whole decoder; building them here keeps the encoder small.)
This file does not validate numbers or quantize; it checks only that the graphs have the expected shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from memgpt_runtime.errors import ExportError
from memgpt_runtime.manifest import EncoderSpec, GraphSpec, KVCacheSpec, layer_names

from .architectures import ModelShape
from .graph_builder import GraphBuilder
from .graph_spec import DecoderGraph
from .onnx_graph import export_onnx, save_onnx, tensor_dims

TASK = "text2text-generation-with-past"
OPTIMUM_ENCODER, OPTIMUM_DECODER = "encoder_model.onnx", "decoder_with_past_model.onnx"
ENCODER_FILE = "encoder.onnx"
HIDDEN = "last_hidden_state"  # (batch, src, d_model), optimum's encoder output
CROSS_KEY, CROSS_VALUE = "cross.{i}.key", "cross.{i}.value"
PAST_SELF_KEY, PAST_SELF_VALUE = "past_key_values.{i}.decoder.key", "past_key_values.{i}.decoder.value"
PRESENT_SELF_KEY, PRESENT_SELF_VALUE = "present.{i}.decoder.key", "present.{i}.decoder.value"
PAST_CROSS_KEY, PAST_CROSS_VALUE = "past_key_values.{i}.encoder.key", "past_key_values.{i}.encoder.value"


@dataclass(frozen=True)
class Seq2SeqGraphs:
    """The two fp32 graphs in the work folder and what the manifest says about them."""

    encoder_path: Path
    decoder_path: Path
    encoder: EncoderSpec
    decoder: DecoderGraph


def export_seq2seq_graphs(
    model: Any, shape: ModelShape, cross_attention: Callable[[Any], list[tuple[Any, Any]]], workdir: Path
) -> Seq2SeqGraphs:
    """optimum's decoder with past, and its encoder extended with the cross projections; both fp32, in `workdir`."""
    decoder_path = export_onnx(model, workdir, task=TASK, produces=OPTIMUM_DECODER, no_post_process=True)
    decoder = read_seq2seq_decoder_graph(decoder_path, shape)
    encoder_path = build_encoder_graph(workdir / OPTIMUM_ENCODER, cross_attention(model), shape, workdir)
    _remove_all_but(workdir, (decoder_path.name, encoder_path.name))  # optimum's decoder without past is unused
    spec = EncoderSpec(
        model_file=ENCODER_FILE,
        input_ids="input_ids",
        attention_mask="attention_mask",
        cross_key=CROSS_KEY,
        cross_value=CROSS_VALUE,
        num_layers=shape.num_layers,  # one key/value pair per decoder layer
        num_heads=shape.num_kv_heads,
        head_size=shape.head_size,
        max_source_length=shape.max_source_length or shape.context_length,
    )
    return Seq2SeqGraphs(encoder_path, decoder_path, spec, decoder)


def build_encoder_graph(
    optimum_encoder: Path, projections: list[tuple[Any, Any]], shape: ModelShape, workdir: Path
) -> Path:
    """Append the cross-attention projections to optimum's encoder; write `workdir/encoder.onnx`."""
    import onnx

    if not optimum_encoder.is_file():
        raise ExportError(f"optimum wrote no {optimum_encoder.name}; this model's ONNX export is not supported")
    if len(projections) != shape.num_layers:
        raise ExportError(
            f"the model has {len(projections)} cross-attention layers, its config says {shape.num_layers}; "
            "the architecture entry disagrees with the model"
        )
    proto = onnx.load(str(optimum_encoder))
    if HIDDEN not in [o.name for o in proto.graph.output] or [i.name for i in proto.graph.input] != [
        "input_ids",
        "attention_mask",
    ]:
        raise ExportError(
            f"optimum's encoder graph lacks {HIDDEN}, input_ids or attention_mask; this export is not supported"
        )
    extra = cross_projection_graph(projections, shape.num_kv_heads, shape.head_size)
    graph = proto.graph
    graph.node.extend(extra.nodes)
    graph.initializer.extend(extra.initializers)
    graph.ClearField("output")
    graph.output.extend(extra.outputs)
    return workdir / save_onnx(proto, workdir, ENCODER_FILE)


def cross_projection_graph(projections: list[tuple[Any, Any]], heads: int, head_size: int) -> GraphBuilder:
    """Nodes from `last_hidden_state` to every layer's `cross.{i}.key/value` (batch, heads, src, head_size)."""
    g = GraphBuilder("cross_attention_projections")
    split = g.constant("cross/split_heads_shape", np.array([0, -1, heads, head_size], dtype=np.int64))
    for i, pair in enumerate(projections):
        for kind, linear, template in (("k", pair[0], CROSS_KEY), ("v", pair[1], CROSS_VALUE)):
            prefix = f"/cross/layers.{i}/{kind}_proj"  # "k_proj"/"v_proj": int4 keeps attention inputs at 8 bits
            weight = linear.weight.detach().float().numpy()  # (heads * head_size, d_model)
            if weight.shape[0] != heads * head_size:
                raise ExportError(
                    f"cross-attention layer {i} projects to {weight.shape[0]} values, expected {heads} heads x "
                    f"{head_size}; the architecture entry disagrees with the model"
                )
            w = g.constant(f"cross.{i}.{kind}_proj.weight", weight.T)  # (d_model, heads * head_size)
            out = g.one("MatMul", [HIDDEN, w], name=f"{prefix}/MatMul")  # (batch, src, heads * head_size)
            if getattr(linear, "bias", None) is not None:
                bias = g.constant(f"cross.{i}.{kind}_proj.bias", linear.bias.detach().float().numpy())
                out = g.one("Add", [out, bias], name=f"{prefix}/Add")
            out = g.one("Reshape", [out, split], name=f"{prefix}/Reshape")  # (batch, src, heads, head_size)
            name = template.format(i=i)
            g.node("Transpose", [out], [name], name=f"{prefix}/Transpose", perm=[0, 2, 1, 3])
            g.output(name, np.float32, ["batch_size", heads, "encoder_sequence_length", head_size])
    return g


def read_seq2seq_decoder_graph(path: Path, shape: ModelShape) -> DecoderGraph:
    """Read the decoder's names and check them against the architecture's shape (layers, heads, head size)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    inputs = {i.name: tensor_dims(i) for i in proto.graph.input}
    outputs = {o.name: tensor_dims(o) for o in proto.graph.output}
    templates = (PAST_SELF_KEY, PAST_SELF_VALUE, PAST_CROSS_KEY, PAST_CROSS_VALUE)
    wanted_in = ["input_ids", "encoder_attention_mask", *layer_names(shape.num_layers, *templates)]
    wanted_out = ["logits", *layer_names(shape.num_layers, PRESENT_SELF_KEY, PRESENT_SELF_VALUE)]
    missing = [n for n in wanted_in if n not in inputs] + [n for n in wanted_out if n not in outputs]
    if missing:
        raise ExportError(
            f"the exported decoder lacks {', '.join(missing[:4])}; this model's ONNX export is not supported"
        )
    unexpected = sorted(set(inputs) - set(wanted_in))
    if unexpected:
        raise ExportError(
            f"the exported decoder also wants {', '.join(unexpected[:4])}; this model's ONNX export is not supported"
        )
    for name in (PAST_SELF_KEY.format(i=0), PAST_CROSS_KEY.format(i=0)):
        past = inputs[name]  # (batch, heads, past or src, head_size)
        if past[1] != shape.num_kv_heads or past[3] != shape.head_size:
            raise ExportError(
                f"the exported decoder's {name} is {past}, expected (batch, {shape.num_kv_heads}, length, "
                f"{shape.head_size}); the architecture entry disagrees with the graph"
            )
    vocab = outputs["logits"][2]
    if not isinstance(vocab, int):
        raise ExportError("the exported logits have no fixed vocabulary dimension; this export is not supported")
    graph = GraphSpec(
        input_ids="input_ids",
        attention_mask=None,  # the decoder's own tokens are never padded: every row steps together
        position_ids=None,
        logits="logits",
        encoder_attention_mask="encoder_attention_mask",
        cross_key=PAST_CROSS_KEY,
        cross_value=PAST_CROSS_VALUE,
    )
    kv = KVCacheSpec(
        layout="concat",
        num_layers=shape.num_layers,
        num_kv_heads=shape.num_kv_heads,
        head_size=shape.head_size,
        past_key=PAST_SELF_KEY,
        past_value=PAST_SELF_VALUE,
        present_key=PRESENT_SELF_KEY,
        present_value=PRESENT_SELF_VALUE,
    )
    return DecoderGraph(graph, kv, vocab)


def _remove_all_but(workdir: Path, graphs: tuple[str, ...]) -> None:
    """Delete what optimum wrote besides `graphs` and their external data (`<graph>_data`, `<graph>.data`)."""
    for path in workdir.iterdir():
        if path.is_file() and not path.name.startswith(graphs):
            path.unlink()
