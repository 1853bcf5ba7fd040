"""Write the model's tokenizer as `tokenizer.json` and prove it encodes exactly like transformers does.

The runtime loads it with `tokenizers.Tokenizer.from_file` alone, so special-token handling (e.g. a BOS
that the HF tokenizer adds) must live in the file's post-processor. A fast tokenizer is saved as it is; a slow
Marian one (opus-mt ships only SentencePiece files) is converted first (`marian_tokenizer.py`), and the check
below then compares the conversion with the slow original. Padding and truncation are switched off: the
runtime pads itself. This file does not touch the chat template (the manifest carries it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from memgpt_runtime.errors import ExportError

from .marian_tokenizer import convert_marian, is_marian

TOKENIZER_FILE = "tokenizer.json"
SAMPLES = (
    "Hello world",
    "The capital of France is Paris.",
    "  leading spaces, tabs\tand\nnewlines  ",
    "Café naïve 東京 😀 multibyte",
    "1234567890 + 3.14 = ?",
    "Über die Brücke: 3 Straßen, 2 Flüsse.",
)


def can_write(tokenizer: Any) -> bool:
    """True if `tokenizer` is fast, or slow of a kind converted here."""
    return bool(getattr(tokenizer, "is_fast", False)) or is_marian(tokenizer)


def write_tokenizer(tokenizer: Any, folder: Path) -> str:
    """Save the tokenizer to `folder/tokenizer.json`; raise ExportError if it encodes differently from `tokenizer`."""
    from tokenizers import Tokenizer

    if getattr(tokenizer, "is_fast", False):
        backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    elif is_marian(tokenizer):
        backend = convert_marian(tokenizer)
    else:
        raise ExportError(
            f"{type(tokenizer).__name__} has no fast version to save as tokenizer.json; it is not supported"
        )
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
