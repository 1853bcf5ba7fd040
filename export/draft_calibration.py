"""Calibrate int4 one layer at a time: sample text from a draft graph, then measure each layer's inputs in turn.

`calibrate.py` measures every weight's input in one run of the whole fp32 graph, which a large model cannot
afford. Here the text is sampled first, by `calibrate.py`'s own sampler (the same seeds, sequences and lengths),
from a draft graph: the fp32 graph where it is small, else the int8 one. Then `LayerCalibration` runs the fused
graph of one layer at a time in fp32 on the whole text at once (every row is a prompt, so the causal attention
sees exactly what the step-by-step sampling saw), keeps each weight's input statistics (the diagonal of X^T X /
positions; the whole matrix for the LM head's input) and hands the layer's output to the next. Memory holds the
text's hidden states and one layer, whatever the depth. This file does not quantize.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .calibrate import CALIBRATION_SEQUENCES, CALIBRATION_TOKENS, SEED, START_TOKEN, _cache_protocol, _run_text
from .families import DecoderRecipe
from .fused_graph import FusedDecoder
from .graph_builder import GraphBuilder
from .graph_spec import PAST_KEY, PAST_VALUE
from .weights import Weights


def sample_text(draft: Path, precision: str, sequences: int = CALIBRATION_SEQUENCES, tokens: int = CALIBRATION_TOKENS,
                seed: int = SEED) -> tuple[np.ndarray, dict[str, Any]]:  # fmt: skip
    """(sequences, tokens) ids sampled from the graph at `draft` (its `precision` named in the note), and the note."""
    import onnx
    import onnxruntime as ort

    from memgpt_runtime.session import make_session_options

    protocol = _cache_protocol(onnx.load(str(draft), load_external_data=False))
    session = ort.InferenceSession(str(draft), sess_options=make_session_options(), providers=["CPUExecutionProvider"])
    text = np.full((sequences, tokens), START_TOKEN, np.int64)  # (rows, length), filled as we sample
    _run_text(session, protocol, text, [], set(), np.random.default_rng(seed))
    note = {"source": f"text sampled from the {precision} model", "seed": seed, "start_token": START_TOKEN,
            "sequences": sequences, "tokens": sequences * tokens}  # fmt: skip
    return text, note


class LayerCalibration:
    """Steps the calibration text through the layers, one fp32 layer graph at a time."""

    def __init__(self, recipe: DecoderRecipe, weights: Weights, text: np.ndarray):
        self.recipe, self.weights = recipe, weights
        self.rows, self.length = text.shape
        table = weights.get("model.embed_tokens.weight")  # (vocab, hidden)
        self.hidden = table[text] * np.float32(recipe.embed_scale)  # (rows, length, hidden)
        del table

    def layer(self, source: int, index: int) -> dict[str, np.ndarray]:
        """Run checkpoint layer `source` (the graph's layer `index`); its weights' input mean squares by node name."""
        outputs, feeds = self._run(lambda decoder: decoder.layer(source), with_cache=True)
        self.hidden = outputs.pop("hidden_out")
        positions = self.rows * self.length
        return {name.replace("layers.0.", f"layers.{index}.", 1):
                np.einsum("pk,pk->k", x, x).astype(np.float64) / positions
                for name, x in ((n, v.reshape(-1, v.shape[-1])) for n, v in outputs.items())}  # fmt: skip

    def head_gram(self) -> np.ndarray:
        """(hidden, hidden) X^T X / positions of the LM head's input (the final norm of every position)."""
        outputs, _ = self._run(None, with_cache=False)
        x = outputs["normed"].reshape(-1, self.recipe.hidden)  # (positions, hidden)
        return (x.T @ x).astype(np.float64) / len(x)

    def _run(self, add_layer: Any, with_cache: bool) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        import onnxruntime as ort

        from memgpt_runtime.session import make_session_options

        g = GraphBuilder("memgpt-calibration-layer")
        decoder = FusedDecoder(self.recipe, self.weights, g, positions=self.length)
        decoder.hidden_input()
        if add_layer is not None:
            add_layer(decoder)
            decoder.hidden_output()
            for name, tensor in decoder.linear_inputs.items():
                g.node("Identity", [tensor], [name], name=f"{name}.input")
                g.output(name, np.float32, None)
        else:
            decoder.final_norm_output()
        proto = g.model()
        session = ort.InferenceSession(proto.SerializeToString(), sess_options=make_session_options(),
                                       providers=["CPUExecutionProvider"])  # fmt: skip
        del proto, g
        r = self.recipe
        feeds: dict[str, np.ndarray] = {"hidden": self.hidden}
        inputs = {i.name for i in session.get_inputs()}
        if "seqlens_k" in inputs:
            feeds["seqlens_k"] = np.full(self.rows, self.length - 1, np.int32)
        if "total_sequence_length" in inputs:
            feeds["total_sequence_length"] = np.array(self.length, np.int32)
        for name in (PAST_KEY.format(i=0), PAST_VALUE.format(i=0)):
            if name in inputs:
                feeds[name] = np.zeros((self.rows, r.kv_heads, self.length, r.head_size), np.float32)
        wanted = [o.name for o in session.get_outputs() if not o.name.startswith("present")]
        return dict(zip(wanted, session.run(wanted, feeds))), feeds
