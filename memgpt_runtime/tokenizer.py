"""Text to token ids and back with the `tokenizers` library, plus chat templates rendered with jinja2.

Mirrors the parts of a transformers tokenizer that generation needs: `encode`, `decode`, `batch_decode`,
`pad` (left padding), and `apply_chat_template` rendered as transformers renders it (sandboxed jinja2, trimmed
blocks, `raise_exception`). Incremental decoding for streaming lives in `stream.py`.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer as _HFTokenizer

from .errors import ModelFolderError, UsageError
from .manifest import REEXPORT_HINT, TokenSpec


class Tokenizer:
    """A `tokenizer.json` with the model's special ids and chat template."""

    def __init__(self, path: str | Path, tokens: TokenSpec, chat_template: str | None = None):
        try:
            self._tok = _HFTokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on a bad file
            raise ModelFolderError(f"cannot read tokenizer {path}: {exc}; {REEXPORT_HINT}") from None
        self.tokens = tokens
        self.chat_template = chat_template
        self._template = None

    @property
    def eos_token_id(self) -> int | None:
        return self.tokens.eos_token_ids[0] if self.tokens.eos_token_ids else None

    @property
    def bos_token_id(self) -> int | None:
        return self.tokens.bos_token_id

    @property
    def pad_token_id(self) -> int | None:
        return self.tokens.pad_token_id

    def token(self, token_id: int | None) -> str | None:
        return None if token_id is None else self._tok.id_to_token(token_id)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`; characters that are not valid Unicode (lone surrogates) are read as U+FFFD."""
        if not isinstance(text, str):
            raise UsageError(f"text to encode must be a string, got {type(text).__name__}")
        return self._tok.encode(valid_text(text), add_special_tokens=add_special_tokens).ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        """Text of `ids`; negative ids (beam search's -1 filler when a model has no EOS id, as transformers') are skipped."""
        return self._tok.decode([int(i) for i in ids if i >= 0], skip_special_tokens=skip_special_tokens)

    def batch_decode(self, rows, skip_special_tokens: bool = False) -> list[str]:
        return [self.decode(row, skip_special_tokens) for row in rows]

    def pad(self, rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Left-pad token lists into (batch, longest) ids and attention mask, as generation wants them."""
        return pad(rows, self.pad_token_id if self.pad_token_id is not None else (self.eos_token_id or 0), "left")

    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = False,
        tokenize: bool = True,
        **template_kwargs: Any,
    ) -> list[int] | str:
        """Render a conversation with the model's chat template; token ids unless tokenize=False."""
        if not self.chat_template:
            raise UsageError("this model has no chat template; pass the prompt as plain text (drop --chat)")
        if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
            raise UsageError("messages must be a list of {'role': ..., 'content': ...} dictionaries")
        text = self._compiled_template().render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.token(self.bos_token_id) or "",
            eos_token=self.token(self.eos_token_id) or "",
            **template_kwargs,
        )
        # subtle: as transformers, the rendered template already holds its special tokens
        return self.encode(text, add_special_tokens=False) if tokenize else text

    def _compiled_template(self):
        if self._template is None:
            from jinja2.exceptions import TemplateError
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            def raise_exception(message):
                raise UsageError(f"chat template refused the messages: {message}")

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            env.globals["raise_exception"] = raise_exception
            env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
            try:
                self._template = env.from_string(self.chat_template)
            except TemplateError as exc:
                raise ModelFolderError(f"the model's chat template does not compile ({exc}); {REEXPORT_HINT}") from None
        return self._template


def valid_text(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD, as a UTF-8 decoder with errors="replace" does.

    Undecodable bytes reach Python as lone surrogates (command-line arguments, `surrogateescape` streams), and
    the `tokenizers` library refuses them with a TypeError.
    """
    return _SURROGATE.sub("\ufffd", text)


_SURROGATE = re.compile("[\ud800-\udfff]")


def pad(rows: list[list[int]], pad_id: int, side: str) -> tuple[np.ndarray, np.ndarray]:
    """(batch, longest) int64 ids and mask; shorter rows get `pad_id` and mask 0 on `side` ("left" or "right").

    Decoder-only prompts are padded on the left (generation appends on the right); encoder sources on the
    right, as their tokenizers pad them.
    """
    longest = max(len(row) for row in rows)
    ids = np.full((len(rows), longest), pad_id, np.int64)
    mask = np.zeros((len(rows), longest), np.int64)
    for i, row in enumerate(rows):
        if row:
            span = slice(longest - len(row), longest) if side == "left" else slice(0, len(row))
            ids[i, span] = row
            mask[i, span] = 1
    return ids, mask
