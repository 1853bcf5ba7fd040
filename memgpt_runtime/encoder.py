"""The encoder of an encoder-decoder model: one ONNX Runtime run per batch of sources.

The encoder graph returns every decoder layer's cross-attention keys and values (see `EncoderSpec`), so the
decoder never recomputes them; `CrossAttention` keeps them, one row per decoded sequence, and binds them at
every step. What this file leaves out: the decoder's own KV cache (`concat_cache.py`) and the search.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ModelFolderError, PromptTooLongError
from .manifest import REEXPORT_HINT, EncoderSpec, GraphSpec, Manifest, layer_names
from .session import open_session


class EncoderSession:
    """One ONNX Runtime session over the encoder graph named by an `EncoderSpec`."""

    def __init__(self, path: str | Path, spec: EncoderSpec, threads: int | None = None):
        self.spec = spec
        self.session = open_session(path, threads)
        self._outputs = layer_names(spec.num_layers, spec.cross_key, spec.cross_value)
        inputs = {i.name for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        missing = sorted(({spec.input_ids, spec.attention_mask} - inputs) | (set(self._outputs) - outputs))
        if missing:
            raise ModelFolderError(
                f"the encoder graph does not match its manifest (no {missing[0]!r}); {REEXPORT_HINT}"
            )

    @classmethod
    def from_manifest(cls, folder: str | Path, manifest: Manifest, threads: int | None = None) -> EncoderSession:
        return cls(Path(folder) / manifest.encoder.model_file, manifest.encoder, threads)

    def encode(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> list[np.ndarray]:
        """(batch, source_len) ids and mask -> per layer [key, value, key, value...], each (batch, heads, source_len, head_size)."""
        longest = self.spec.max_source_length
        if input_ids.shape[1] > longest:
            raise PromptTooLongError(
                f"the source has {input_ids.shape[1]} tokens but the encoder takes at most {longest}; shorten it"
            )
        feed = {self.spec.input_ids: input_ids, self.spec.attention_mask: attention_mask}
        return self.session.run(self._outputs, feed)


class CrossAttention:
    """The encoder's cross-attention keys/values and source mask, one row per decoded sequence.

    The decoder cache calls `bind` before every run and `select` whenever it reorders its own rows. Rows
    that decode the same source (the beams of one prompt) hold identical data, so a reorder copies only the
    rows whose source changes, which beam search never does.
    """

    def __init__(self, graph: GraphSpec, num_layers: int, cross: list[np.ndarray], source_mask: np.ndarray):
        self._names = layer_names(num_layers, graph.cross_key, graph.cross_value)
        self._mask_name = graph.encoder_attention_mask
        self._arrays = [np.ascontiguousarray(a, np.float32) for a in cross]  # (rows, heads, source_len, head_size)
        self._mask = np.ascontiguousarray(source_mask, np.int64)  # (rows, source_len)
        self._source = np.arange(len(self._mask))  # (rows,) which source each row decodes
        self.rows = len(self._mask)

    def select(self, rows: np.ndarray) -> None:
        """Row i becomes old row rows[i] (same contract as `DecoderState.select`)."""
        sources = self._source[rows]
        if len(rows) == self.rows:
            moved = np.flatnonzero(sources != self._source)
            if len(moved):
                for array in self._arrays:
                    array[moved] = array[rows[moved]]
                self._mask[moved] = self._mask[rows[moved]]
        else:
            self._arrays = [np.take(a, rows, axis=0) for a in self._arrays]
            self._mask = np.take(self._mask, rows, axis=0)
        self._source = sources
        self.rows = len(rows)

    def bind(self, binding) -> None:
        """Bind the source mask and every layer's cross keys/values as inputs of the next decoder run."""
        binding.bind_cpu_input(self._mask_name, self._mask)
        for name, array in zip(self._names, self._arrays):
            binding.bind_cpu_input(name, array)
