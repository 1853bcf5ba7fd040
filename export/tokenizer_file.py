"""Write the model's fast tokenizer as `tokenizer.json` and prove it encodes exactly like transformers does.

The runtime loads it with `tokenizers.Tokenizer.from_file` alone, so special-token handling (e.g. a BOS
that the HF tokenizer adds) must live in the file's post-processor. Padding and truncation are switched off:
the runtime pads itself. This file does not touch the chat template (the manifest carries it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from memgpt_runtime.errors import ExportError

TOKENIZER_FILE = "tokenizer.json"
SAMPLES = (
    "Hello world",
    "The capital of France is Paris.",
    "  leading spaces, tabs\tand\nnewlines  ",
    "Café naïve 東京 😀 multibyte",
    "1234567890 + 3.14 = ?",
)


def write_tokenizer(tokenizer: Any, folder: Path) -> str:
    """Save `tokenizer.backend_tokenizer` to `folder/tokenizer.json`; raise ExportError if it encodes differently."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.no_truncation()
    path = folder / TOKENIZER_FILE
    backend.save(str(path))
    reloaded = Tokenizer.from_file(str(path))
    for text in SAMPLES:
        want = list(tokenizer(text)["input_ids"])
        got = reloaded.encode(text).ids
        if got != want:
            raise ExportError(
                f"tokenizer.json encodes {text!r} as {got[:8]}..., transformers as {want[:8]}...; "
                "this tokenizer cannot be exported faithfully: please report it"
            )
    return TOKENIZER_FILE
