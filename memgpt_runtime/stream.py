"""Incremental detokenization: turns a growing list of token ids into text pieces as they become final.

Decoding token by token splits multi-byte characters (a byte-level BPE emits one byte per token) and loses
the leading spaces that SentencePiece-style decoders strip at the start of a string. So each new piece is
decoded together with a few tokens of context and released only when it no longer ends in an incomplete
character (the replacement character U+FFFD). This follows vllm-project/vllm
`transformers_utils/detokenizer_utils.py` (`detokenize_incrementally`, its prefix and read offsets).
"""

from __future__ import annotations

from collections.abc import Iterable

INCOMPLETE = "\ufffd"


class TextStream:
    """Feed token ids with `push`; each call returns the text that became final (possibly empty)."""

    def __init__(self, tokenizer, skip_special_tokens: bool = True):
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        self._ids: list[int] = []
        self._prefix_offset = 0  # start of the context decoded with each new piece
        self._read_offset = 0  # end of the text already released

    def push(self, ids: Iterable[int]) -> str:
        self._ids.extend(int(i) for i in ids)
        decode = self._tokenizer.decode
        prefix = decode(self._ids[self._prefix_offset : self._read_offset], self._skip)
        full = decode(self._ids[self._prefix_offset :], self._skip)
        if len(full) > len(prefix) and not full.endswith(INCOMPLETE):
            piece = full[len(prefix) :]
            self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
            return piece
        return ""

    def flush(self) -> str:
        """The text still held back at the end (an incomplete character is released as it is)."""
        decode = self._tokenizer.decode
        prefix = decode(self._ids[self._prefix_offset : self._read_offset], self._skip)
        full = decode(self._ids[self._prefix_offset :], self._skip)
        self._prefix_offset = self._read_offset = len(self._ids)
        return full[len(prefix) :]
