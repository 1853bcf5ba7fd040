"""Field checks of a parsed manifest: types, ranges, token ids inside the vocabulary, file names inside the folder.

A hand-edited or damaged manifest must fail here, with the field named, and not as a traceback deep in a
generation. What the graph itself says (its input names and shapes) is checked against these fields when the
session opens (`session.py`); this module reads nothing but the manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import ModelFolderError
from .integrity import inside

# generation defaults that hold token ids, each an id or a list of ids (bad_words_ids: a list of lists)
TOKEN_DEFAULTS = (
    "eos_token_id",
    "pad_token_id",
    "bos_token_id",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "decoder_start_token_id",
)


def check_fields(manifest: Any, folder: Path, hint: str) -> None:
    """Raise ModelFolderError naming the first field of `manifest` that a runtime cannot use."""

    def fail(field: str, wanted: str, value: Any) -> None:
        raise ModelFolderError(f"manifest field {field} must be {wanted}, got {value!r}; {hint}")

    def positive(field: str, value: Any) -> None:
        if not _is_int(value) or value < 1:
            fail(field, "an integer >= 1", value)

    def name(field: str, value: Any, optional: bool = False) -> None:
        if not (isinstance(value, str) and value) and not (optional and value is None):
            fail(field, "a name" + (" or null" if optional else ""), value)

    def token(field: str, value: Any, optional: bool = True) -> None:
        if value is None and optional:
            return
        if not _is_int(value) or not 0 <= value < manifest.vocab_size:
            fail(field, f"a token id in [0, vocab_size={manifest.vocab_size})", value)

    positive("vocab_size", manifest.vocab_size)
    positive("context_length", manifest.context_length)
    for field in ("model_file", "tokenizer_file"):
        inside(folder, getattr(manifest, field), field)
    name("architecture", manifest.architecture)

    kv = manifest.kv_cache
    for field in ("num_layers", "num_kv_heads", "head_size"):
        positive(f"kv_cache.{field}", getattr(kv, field))
    for field in ("past_key", "past_value", "present_key", "present_value"):
        value = getattr(kv, field)
        if not (isinstance(value, str) and "{i}" in value):
            fail(f"kv_cache.{field}", "a name with the {i} placeholder", value)
    name("kv_cache.layout", kv.layout)
    if kv.dtype != "float32":  # the KV buffers are allocated as float32 (slots.py, concat_cache.py)
        fail("kv_cache.dtype", '"float32"', kv.dtype)

    graph = manifest.graph
    name("graph.input_ids", graph.input_ids)
    name("graph.logits", graph.logits)
    for field in (
        "attention_mask",
        "position_ids",
        "seqlens_k",
        "total_sequence_length",
        "last_index",
        "encoder_attention_mask",
        "cross_key",
        "cross_value",
    ):
        name(f"graph.{field}", getattr(graph, field), optional=True)

    if graph.all_positions is not None and not (_is_int(graph.all_positions) and graph.all_positions < 0):
        fail("graph.all_positions", "a negative last_index value or null", graph.all_positions)

    tokens = manifest.tokens
    if not isinstance(tokens.eos_token_ids, list):
        fail("tokens.eos_token_ids", "a list of token ids (possibly empty)", tokens.eos_token_ids)
    for eos in tokens.eos_token_ids:
        token("tokens.eos_token_ids", eos, optional=False)
    for field in ("bos_token_id", "pad_token_id", "decoder_start_token_id"):
        token(f"tokens.{field}", getattr(tokens, field))

    if manifest.chat_template is not None and not isinstance(manifest.chat_template, str):
        fail("chat_template", "a Jinja template string or null", manifest.chat_template)
    for field in ("generation_defaults", "quantization", "source", "validation", "files", "extra"):
        if not isinstance(getattr(manifest, field), dict):
            fail(field, "an object", getattr(manifest, field))
    defaults = manifest.generation_defaults
    for field in TOKEN_DEFAULTS:
        value = defaults.get(field)
        for item in value if isinstance(value, list) else [value]:
            token(f"generation_defaults.{field}", item)
    words = defaults.get("bad_words_ids")
    if words is not None:
        if not isinstance(words, list) or not all(isinstance(w, list) for w in words):
            fail("generation_defaults.bad_words_ids", "a list of lists of token ids", words)
        for item in (t for w in words for t in w):
            token("generation_defaults.bad_words_ids", item, optional=False)

    for file_name, record in manifest.files.items():
        inside(folder, file_name, "files entry")
        if not (isinstance(record, dict) and _is_int(record.get("size")) and isinstance(record.get("sha256"), str)):
            fail(f"files[{file_name!r}]", 'an object {"size": bytes, "sha256": hex digest}', record)

    encoder = manifest.encoder
    if encoder is not None:
        inside(folder, encoder.model_file, "encoder.model_file")
        for field in ("num_layers", "num_heads", "head_size", "max_source_length"):
            positive(f"encoder.{field}", getattr(encoder, field))
        for field in ("input_ids", "attention_mask", "cross_key", "cross_value"):
            name(f"encoder.{field}", getattr(encoder, field))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
