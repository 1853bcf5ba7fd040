"""The manifest: the one contract between the export stage and the runtime.

Export resolves every architecture detail into `manifest.json`; the runtime reads only this file (and the
ONNX model and `tokenizer.json` it names) and never branches on the model type. This module holds the
schema, its version, and the reader that tells a user how to refresh a stale folder. It does not know how
any of the fields are computed: that is the export stage's job.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ModelFolderError
from .integrity import inside, size_problems
from .manifest_check import check_fields

FORMAT = "memgpt-runtime-manifest"
VERSION = 3
# version 1 folders predate encoder-decoder models (all are decoder-only); version 2 ones the file records
READABLE_VERSIONS = (1, 2, 3)
KINDS = ("decoder-only", "encoder-decoder")
FILENAME = "manifest.json"
REEXPORT_HINT = "re-export it with `memgpt export MODEL -o DIR --force`"
UPGRADE_HINT = "upgrade memgpt-runtime (pip install --upgrade memgpt-runtime) to read it"


@dataclass(frozen=True)
class KVCacheSpec:
    """How the decoder graph takes and returns its key/value cache.

    layout "concat": past inputs of shape (batch, kv_heads, past_len, head_size); the graph returns the
    presents of shape (batch, kv_heads, past_len + new_len, head_size).
    layout "shared": one (batch, kv_heads, capacity, head_size) buffer per layer and kind, bound as both past
    and present; each row keeps its tokens from position 0 and the graph writes new ones at `seqlens_k`.
    Names use the `{i}` placeholder for the layer index.
    """

    layout: str
    num_layers: int
    num_kv_heads: int
    head_size: int
    past_key: str
    past_value: str
    present_key: str
    present_value: str
    dtype: str = "float32"

    def past_names(self) -> list[str]:
        """The graph's past inputs, layer by layer: key 0, value 0, key 1, ..."""
        return layer_names(self.num_layers, self.past_key, self.past_value)

    def present_names(self) -> list[str]:
        """The graph's present outputs, in the order of `past_names`."""
        return layer_names(self.num_layers, self.present_key, self.present_value)


def layer_names(num_layers: int, *templates: str) -> list[str]:
    """Each `{i}` template filled for every layer, layer by layer: t0(0), t1(0), t0(1), t1(1), ..."""
    return [t.format(i=i) for i in range(num_layers) for t in templates]


@dataclass(frozen=True)
class GraphSpec:
    """Names of the decoder graph's inputs and outputs (None = the graph has no such input).

    A "concat" graph takes the attention mask and position ids and returns logits (batch, seq, vocab). A
    "shared" graph takes instead `seqlens_k` (batch,) int32, each row's tokens after this step minus one,
    `total_sequence_length` () int32, their maximum plus one, and `last_index` (batch,) int64, the position
    in this step's input whose logits to return; its logits are (batch, vocab). `all_positions`, when set, is a
    `last_index` value that makes such a graph return the logits of every position of the step's input instead,
    (batch * seq, vocab) row-major (scoring, perplexity); None: the graph cannot.
    """

    input_ids: str
    attention_mask: str | None
    position_ids: str | None
    logits: str
    seqlens_k: str | None = None
    total_sequence_length: str | None = None
    last_index: str | None = None
    all_positions: int | None = None
    # encoder-decoder models only: the source mask (batch, source_len) and each layer's cross-attention
    # keys/values (batch, heads, source_len, head_size) as the encoder graph computed them
    encoder_attention_mask: str | None = None
    cross_key: str | None = None
    cross_value: str | None = None


@dataclass(frozen=True)
class TokenSpec:
    """Special token ids. eos_token_ids lists every id that ends a generation."""

    bos_token_id: int | None
    eos_token_ids: list[int]
    pad_token_id: int | None
    decoder_start_token_id: int | None = None  # encoder-decoder models: the decoder's first input


@dataclass(frozen=True)
class EncoderSpec:
    """The encoder graph of an encoder-decoder model, run once per source.

    It takes `input_ids` and `attention_mask` (batch, source_len) int64 and returns, for every decoder layer
    `{i}`, the cross-attention keys `cross_key` and values `cross_value` of shape (batch, num_heads,
    source_len, head_size): the decoder graph reads them as its `GraphSpec.cross_key`/`cross_value` inputs at
    every step, so the projections of the encoder output are computed once, not once per token.
    """

    model_file: str
    input_ids: str
    attention_mask: str
    cross_key: str
    cross_value: str
    num_layers: int
    num_heads: int
    head_size: int
    max_source_length: int  # the longest source the encoder takes


@dataclass(frozen=True)
class Manifest:
    """Everything the runtime needs to know about an exported folder."""

    model_file: str
    tokenizer_file: str
    architecture: str
    vocab_size: int
    context_length: int
    graph: GraphSpec
    kv_cache: KVCacheSpec
    tokens: TokenSpec
    chat_template: str | None
    generation_defaults: dict[str, Any]
    quantization: dict[str, Any]
    source: dict[str, Any]
    validation: dict[str, Any]
    format: str = FORMAT
    version: int = VERSION
    kind: str = "decoder-only"  # or "encoder-decoder": then `encoder` is set and `model_file` is the decoder
    encoder: EncoderSpec | None = None
    # every file of the folder but the manifest: {relative path: {"size": bytes, "sha256": hex}}; {} before v3
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        body = asdict(self)
        ordered = {"format": body.pop("format"), "version": body.pop("version"), **body}
        return json.dumps(ordered, indent=2, ensure_ascii=False) + "\n"

    def write(self, folder: str | Path) -> Path:
        path = Path(folder) / FILENAME
        path.write_text(self.to_json(), encoding="utf-8")
        return path


def read_manifest(folder: str | Path, check_files: bool = True) -> Manifest:
    """Read and check `folder/manifest.json`; raise ModelFolderError saying how to fix a bad folder.

    `check_files`: check that the named files exist and every recorded file has its size (a stat each;
    `memgpt verify` reads the manifest without it, then hashes every file).
    """
    folder = Path(folder)
    if not folder.exists():
        raise ModelFolderError(
            f"model folder {folder} does not exist; export one with `memgpt export MODEL -o {folder}`"
        )
    if not folder.is_dir():
        raise ModelFolderError(f"{folder} is not a folder; pass the folder that `memgpt export` wrote")
    path = folder / FILENAME
    if not path.is_file():
        raise ModelFolderError(
            f"{folder} has no {FILENAME}: it is not a memgpt export; export it with `memgpt export MODEL -o {folder}`"
        )
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, RecursionError, json.JSONDecodeError) as exc:
        raise ModelFolderError(f"{path} is not valid JSON ({exc}); {REEXPORT_HINT}") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise ModelFolderError(f"{path} is not a {FORMAT} file; {REEXPORT_HINT}")
    version = body.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > VERSION:
        raise ModelFolderError(
            f"{path} has manifest version {version}, newer than this runtime reads (up to {VERSION}); {UPGRADE_HINT}"
        )
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise ModelFolderError(
            f"{path} has manifest version {version!r}, this runtime reads versions {', '.join(map(str, READABLE_VERSIONS))}; {REEXPORT_HINT}"
        )
    manifest = Manifest(
        graph=_spec(GraphSpec, body.pop("graph", None), "graph", path),
        kv_cache=_spec(KVCacheSpec, body.pop("kv_cache", None), "kv_cache", path),
        tokens=_spec(TokenSpec, body.pop("tokens", None), "tokens", path),
        encoder=_spec(EncoderSpec, encoder, "encoder", path)
        if (encoder := body.pop("encoder", None)) is not None
        else None,
        **_fields(Manifest, body, "", path),
    )
    if manifest.kind not in KINDS or (manifest.kind == "encoder-decoder") != (manifest.encoder is not None):
        raise ModelFolderError(
            f"{path} has model kind {manifest.kind!r} and encoder {manifest.encoder!r}; {REEXPORT_HINT}"
        )
    check_fields(manifest, folder, REEXPORT_HINT)
    if check_files:
        _check_files(folder, manifest)
    return manifest


def _check_files(folder: Path, manifest: Manifest) -> None:
    """The files the manifest names exist, and every file the export recorded has its recorded size."""
    files = [manifest.model_file, manifest.tokenizer_file] + ([manifest.encoder.model_file] if manifest.encoder else [])
    for name in files:
        if not inside(folder, name, "file name").is_file():
            raise ModelFolderError(f"{folder} lacks {name}, which its manifest names; {REEXPORT_HINT}")
    problems = size_problems(folder, manifest.files)
    if problems:
        raise ModelFolderError(
            f"{folder} is damaged ({problems[0]}{' and more' if len(problems) > 1 else ''}); "
            f"`memgpt verify {folder}` lists every problem; {REEXPORT_HINT}"
        )


def _spec(cls, body: Any, field: str, path: Path):
    if not isinstance(body, dict):
        raise ModelFolderError(f"{path} has no valid {field!r} object (got {body!r}); {REEXPORT_HINT}")
    return cls(**_fields(cls, body, f"{field}.", path))


def _fields(cls, body: dict, prefix: str, path: Path) -> dict:
    """`body` checked to hold every required field of dataclass `cls` and no unknown one."""
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(body) - set(known))
    if unknown:
        raise ModelFolderError(f"{path} has an unknown field {prefix}{unknown[0]}; {REEXPORT_HINT}")
    required = [n for n, f in known.items() if f.default is MISSING and f.default_factory is MISSING]
    missing = [n for n in required if n not in body and n not in ("graph", "kv_cache", "tokens")]
    if missing:
        raise ModelFolderError(f"{path} lacks the field {prefix}{missing[0]}; {REEXPORT_HINT}")
    return body
