"""What callers hand in, checked once at the door: token id rows, attention masks, and the token ids of options.

Every id, from a prompt or from an option (`eos_token_id`, `bad_words_ids`...), must be an integer inside the
model's vocabulary; anything else is a UsageError that names where the id came from. Floats are refused, never
truncated, and Python integers are checked before numpy sees them (so 10**30 is an error, not an overflow).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .config import GenerationConfig
from .errors import UsageError

IDS_SHAPE = "a list of token ids, a list of such lists, or a (batch, length) integer array"
# GenerationConfig fields that hold token ids, and how each holds them
_ID_FIELDS = ("eos_token_id", "pad_token_id", "forced_bos_token_id", "forced_eos_token_id", "decoder_start_token_id")


def is_token(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def token_rows(input_ids: Any, vocab_size: int, name: str = "input_ids") -> np.ndarray | list[list[int]]:
    """`input_ids` as a (batch, length) int64 array or as a list of non-empty id lists, every id in the vocabulary.

    A 1-D array or a flat list is one row. Lists are returned as lists, for the caller to pad on its side.
    """
    if isinstance(input_ids, np.ndarray):
        if not np.issubdtype(input_ids.dtype, np.integer) or input_ids.dtype == np.bool_:
            raise UsageError(f"{name} must be {IDS_SHAPE}, got an array of {input_ids.dtype}")
        ids = input_ids[None, :] if input_ids.ndim == 1 else input_ids
        if ids.ndim != 2 or ids.size == 0:
            raise UsageError(f"{name} must be {IDS_SHAPE}, got an array of shape {input_ids.shape}")
        _check_range(int(ids.min()), int(ids.max()), vocab_size, name)
        return ids.astype(np.int64)
    if not isinstance(input_ids, (list, tuple)) or len(input_ids) == 0:
        raise UsageError(f"{name} must be {IDS_SHAPE}, got {_describe(input_ids)}")
    nested = any(isinstance(t, (list, tuple, np.ndarray)) for t in input_ids)
    rows = input_ids if nested else [input_ids]
    out = []
    for row in rows:
        if isinstance(row, np.ndarray) and row.ndim == 1:
            row = row.tolist() if np.issubdtype(row.dtype, np.integer) else list(row)
        if not isinstance(row, (list, tuple)):
            raise UsageError(f"{name} must be {IDS_SHAPE}, got {_describe(row)} beside lists")
        if not all(is_token(t) for t in row):
            raise UsageError(f"{name} must be {IDS_SHAPE}, got a row holding {_describe(row)}")
        if len(row) == 0:
            raise UsageError(f"a prompt in {name} is empty; give every prompt at least one token")
        row = [int(t) for t in row]
        _check_range(min(row), max(row), vocab_size, name)
        out.append(row)
    return out


def attention_matrix(attention_mask: Any, shape: tuple[int, int]) -> np.ndarray:
    """The caller's attention mask as a (batch, length) int64 array of 0s and 1s of `shape`."""
    try:
        mask = np.asarray(attention_mask)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"attention_mask must be an array of 0s and 1s of shape {shape} ({exc})") from None
    mask = mask[None, :] if mask.ndim == 1 else mask
    if mask.shape != shape:
        raise UsageError(f"attention_mask must have the shape of input_ids {shape}, got {mask.shape}")
    if not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == np.bool_) or not np.isin(mask, (0, 1)).all():
        raise UsageError("attention_mask must hold only 0s and 1s (integers or booleans)")
    return mask.astype(np.int64)


def check_config_tokens(config: GenerationConfig, vocab_size: int) -> None:
    """Every token id the config holds is inside the vocabulary; the message names the option."""
    for name in _ID_FIELDS:
        value = getattr(config, name)
        for token in value if isinstance(value, tuple) else () if value is None else (value,):
            if not 0 <= token < vocab_size:
                raise UsageError(f"{name} must be a token id in [0, {vocab_size}), got {token}")
    for word in config.bad_words_ids or ():
        for token in word:
            if not 0 <= token < vocab_size:
                raise UsageError(f"bad_words_ids must hold token ids in [0, {vocab_size}), got {token}")


def _check_range(low: int, high: int, vocab_size: int, name: str) -> None:
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise UsageError(f"{name} must hold token ids in [0, {vocab_size}), got {bad}")


def _describe(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        kinds = sorted({type(v).__name__ for v in value})
        return f"a {type(value).__name__} of {', '.join(kinds)}" if kinds else f"an empty {type(value).__name__}"
    return f"a {type(value).__name__}"
