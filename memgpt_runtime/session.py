"""The ONNX Runtime session of a decoder graph, and the KV cache that fits its layout.

The session checks the graph against its manifest and hands out one cache per generation: `ConcatCache` for
graphs that return past + new positions (optimum exports, encoder-decoder decoders too, with the encoder's
cross attention bound alongside), `SharedCache` for graphs that write into one buffer bound as both past and
present (the fused graphs). Both implement the search's `DecoderState`.
What this file leaves out: tokenization and the search itself (`search.py`, `beam.py`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .concat_cache import ConcatCache
from .errors import ModelFolderError, PromptTooLongError, UsageError, first_line
from .manifest import REEXPORT_HINT, GraphSpec, KVCacheSpec, Manifest, layer_names
from .shared_cache import SharedCache
from .slots import min_rows_of

CACHES = {"concat": ConcatCache, "shared": SharedCache}
# prompts run in chunks of this many positions from their start (`DecoderSession.prefill_chunk`), in
# `generate()` as in the engine: one chunk is the longest the engine makes other requests wait, and chunk
# boundaries change the last bits of the logits, so both must use the same
PREFILL_CHUNK = 256
LAYOUT_INPUTS = {
    "concat": (),
    "shared": ("seqlens_k", "total_sequence_length", "last_index"),
}  # GraphSpec names each needs


def make_session_options(threads: int | None = None) -> ort.SessionOptions:
    """Session options for latency on a CPU: all graph optimizations, a fixed thread count."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return options


def open_session(path: str | Path, threads: int | None = None) -> ort.InferenceSession:
    """An ONNX Runtime CPU session over `path`; a load failure becomes a one-line ModelFolderError."""
    try:
        return ort.InferenceSession(
            str(path), sess_options=make_session_options(threads), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own types, all without a hint for the user
        raise ModelFolderError(f"cannot load {path}: {first_line(exc)}; {REEXPORT_HINT}") from None


class DecoderSession:
    """One ONNX Runtime session over an exported decoder graph; makes a cache per generation."""

    def __init__(
        self,
        path: str | Path,
        graph: GraphSpec,
        kv_cache: KVCacheSpec,
        vocab_size: int,
        context_length: int,
        threads: int | None = None,
        batch_invariant: bool = False,
    ):
        self.graph, self.kv_cache = graph, kv_cache
        self.batch_invariant = batch_invariant
        self.vocab_size, self.context_length = vocab_size, context_length
        if kv_cache.layout not in CACHES:
            raise ModelFolderError(f"unknown KV cache layout {kv_cache.layout!r}; {REEXPORT_HINT}")
        self.session = open_session(path, threads)
        self._min_rows = None
        self.prefill_chunk = PREFILL_CHUNK
        self._check_io()

    @classmethod
    def from_manifest(
        cls, folder: str | Path, manifest: Manifest, threads: int | None = None, batch_invariant: bool = False
    ) -> DecoderSession:
        return cls(
            Path(folder) / manifest.model_file,
            manifest.graph,
            manifest.kv_cache,
            manifest.vocab_size,
            manifest.context_length,
            threads,
            batch_invariant,
        )

    def _check_io(self) -> None:
        """Refuse a graph whose inputs and outputs are not the ones the manifest names."""
        graph, kv = self.graph, self.kv_cache
        inputs = {i.name for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        optional = (
            graph.attention_mask,
            graph.position_ids,
            graph.seqlens_k,
            graph.total_sequence_length,
            graph.last_index,
            graph.encoder_attention_mask,
        )
        wanted_in = {graph.input_ids} | {n for n in optional if n}
        wanted_out = {graph.logits}
        wanted_in |= {
            *kv.past_names(),
            *layer_names(kv.num_layers, *(n for n in (graph.cross_key, graph.cross_value) if n)),
        }
        wanted_out |= set(kv.present_names())
        missing = sorted((wanted_in - inputs) | (wanted_out - outputs))
        if missing:
            raise ModelFolderError(f"the ONNX model does not match its manifest (no {missing[0]!r}); {REEXPORT_HINT}")
        if kv.past_key.format(i=kv.num_layers) in inputs:
            raise ModelFolderError(
                f"the ONNX model has more layers than the manifest's kv_cache.num_layers ({kv.num_layers}); {REEXPORT_HINT}"
            )
        unnamed = sorted(inputs - wanted_in)
        if unnamed:
            raise ModelFolderError(
                f"the ONNX model takes {unnamed[0]!r}, which its manifest does not name; {REEXPORT_HINT}"
            )
        needed = [n for n in LAYOUT_INPUTS[kv.layout] if getattr(graph, n) is None]
        if needed:
            raise ModelFolderError(
                f"the manifest's graph.{needed[0]} is null, which a {kv.layout!r} KV cache needs; {REEXPORT_HINT}"
            )
        shapes = {i.name: i.shape for i in self.session.get_inputs()} | {
            o.name: o.shape for o in self.session.get_outputs()
        }
        # (batch, kv_heads, length, head_size) caches; (batch, [seq,] vocab) logits; symbolic dims are not checked
        expected = {
            (kv.past_key.format(i=0), 1): ("kv_cache.num_kv_heads", kv.num_kv_heads),
            (kv.past_key.format(i=0), 3): ("kv_cache.head_size", kv.head_size),
            (graph.logits, -1): ("vocab_size", self.vocab_size),
        }
        for (name, axis), (field, value) in expected.items():
            dims = shapes.get(name) or []
            dim = dims[axis] if -len(dims) <= axis < len(dims) else None
            if isinstance(dim, int) and dim != value:
                raise ModelFolderError(
                    f"the manifest's {field} is {value} but the ONNX model's {name} has {dim}; {REEXPORT_HINT}"
                )

    def new_state(self, max_rows: int, max_length: int, cross=None):
        """A cache for up to `max_rows` sequences of up to `max_length` tokens (prompt included).

        `cross`: for an encoder-decoder model, the `CrossAttention` of the sources being decoded.
        """
        context = self.context_length
        if max_length > context:
            raise PromptTooLongError(
                f"the prompt plus new tokens need {max_length} positions but the model's context is {context}; "
                "shorten the prompt or lower max_new_tokens"
            )
        kv = self.kv_cache
        need = max_rows * max_length * kv.num_layers * 2 * kv.num_kv_heads * kv.head_size * 4  # fp32 keys and values
        if need > physical_memory():
            raise UsageError(
                f"{max_rows} rows of {max_length} positions need {need / 2**30:.1f} GiB of KV cache, more than this "
                f"machine's {physical_memory() / 2**30:.1f} GiB; lower num_beams, num_return_sequences, the batch or max_new_tokens"
            )
        if (cross is None) != (self.graph.cross_key is None):
            raise ValueError("an encoder-decoder graph needs the encoder's cross attention, a decoder-only one none")
        if cross is not None:
            if self.kv_cache.layout != "concat":
                raise ModelFolderError(f"encoder-decoder graphs need the 'concat' KV cache layout; {REEXPORT_HINT}")
            return ConcatCache(self, max_rows, max_length, cross=cross)
        if self.kv_cache.layout == "shared":
            return SharedCache(self, max_rows, max_length, self.prefill_chunk)
        return ConcatCache(self, max_rows, max_length)

    @property
    def min_rows(self) -> int:
        """The fewest rows a decode step of a "shared" graph runs: 1, or with `batch_invariant` as many as it takes
        for no answer to depend on the batch (slots.py)."""
        if self._min_rows is None:
            self._min_rows = min_rows_of(self) if self.batch_invariant else 1
        return self._min_rows


def physical_memory() -> int:
    """This machine's RAM in bytes (a large number where the platform does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 1 << 50


def default_threads() -> int | None:
    """Threads from MEMGPT_THREADS, or None to let onnxruntime use one per physical core."""
    value = os.environ.get("MEMGPT_THREADS")
    if value is None or not value.strip():
        return None
    try:
        threads = int(value)
    except ValueError:
        raise UsageError(f"MEMGPT_THREADS must be a whole number of threads, got {value!r}") from None
    return check_threads(threads, "MEMGPT_THREADS")


def check_threads(threads, name: str = "threads") -> int | None:
    """`threads` if it is None (onnxruntime's default) or in [1, this machine's CPUs]; UsageError otherwise.

    More threads than CPUs make every step wait on descheduled workers (1,000 threads: ~50x slower).
    """
    cpus = os.cpu_count() or 1
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or not 1 <= threads <= cpus:
        raise UsageError(f"{name} must be a whole number in [1, {cpus}] (this machine's CPUs), got {threads!r}")
    return int(threads)
