"""The export stage of memgpt-runtime: turn a Hugging Face causal LM or encoder-decoder into an ONNX runtime folder.

`export_model(model=None, output="dir", quantize="fp32"|"int8"|"int4", force=False) -> Path` is the Python
API; `memgpt export` (export/cli.py) is the command. Heavy imports (torch, transformers, optimum) happen only
when an export runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def export_model(
    model: str | None = None, output: str | Path = "model", quantize: str = "fp32", force: bool = False, **kwargs: Any
) -> Path:
    """Export MODEL (None = default SmolLM2-135M-Instruct, a hub id, a folder or a .gguf) into `output`."""
    from .pipeline import export_model as run

    return run(model=model, output=output, quantize=quantize, force=force, **kwargs)


__all__ = ["export_model"]
