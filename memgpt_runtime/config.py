"""Generation parameters: one frozen dataclass, validated on construction, with transformers' defaults.

Each field says its range and the value that turns it off. The defaults are those of transformers 4.57
`GenerationConfig`; a model's own defaults (its `generation_config.json`, carried in the manifest) sit on
top of them, and the caller's keyword arguments on top of those, as in `transformers.generate()`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from .errors import UsageError

DEFAULT_NEW_TOKENS = 20  # transformers: a default max_length of 20 means 20 new tokens


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int | None = None  # new tokens to generate, >= 1; None = use max_length
    max_length: int | None = (
        None  # prompt + new tokens, >= 1; None (and no max_new_tokens) = prompt + default_new_tokens
    )
    default_new_tokens: int = (
        DEFAULT_NEW_TOKENS  # >= 1, new tokens when neither length above is set, cut at the context
    )
    min_new_tokens: int = 0  # EOS is banned until this many new tokens; 0 = off
    min_length: int = 0  # EOS is banned until the sequence (prompt included) is this long; 0 = off
    do_sample: bool = False  # False = greedy or beam search
    temperature: float = 1.0  # > 0; 1.0 = off (sampling only)
    top_k: int = 50  # >= 0; 0 = off (sampling only)
    top_p: float = 1.0  # in (0, 1]; 1.0 = off (sampling only)
    seed: int | None = None  # >= 0; None = fresh entropy (sampling only)
    num_beams: int = 1  # >= 1; 1 = no beam search
    length_penalty: float = 1.0  # beam score = sum logprob / generated_len ** length_penalty; 0 = off
    early_stopping: bool | str = False  # True, False or "never" (beam search only)
    num_return_sequences: int = 1  # >= 1, at most num_beams
    no_repeat_ngram_size: int = 0  # >= 0; 0 = off
    repetition_penalty: float = 1.0  # > 0; 1.0 = off
    presence_penalty: float = 0.0  # in [-2, 2], subtracted once from every token already generated; 0 = off (OpenAI)
    frequency_penalty: float = 0.0  # in [-2, 2], subtracted per occurrence in the generated tokens; 0 = off (OpenAI)
    eos_token_id: tuple[int, ...] = ()  # ids that end a sequence; () = never stop early
    pad_token_id: int | None = None  # id that fills finished rows; None = the first EOS id
    forced_bos_token_id: int | None = None  # the first new token is forced to this id; None = off
    forced_eos_token_id: int | tuple[int, ...] | None = None  # the last token before max_length is forced; None = off
    bad_words_ids: tuple[tuple[int, ...], ...] | None = None  # token sequences never generated; None = off
    decoder_start_token_id: int | None = None  # encoder-decoder models: the decoder's first input
    renormalize_logits: bool = False  # log-softmax the scores again after every processor; False = off
    return_dict_in_generate: bool = False  # True = also return the beam scores (sequences_scores)
    logprobs: int | None = (
        None  # >= 0: each Step carries its tokens' log-probabilities and this many top ones; None = off
    )
    prompt_lookup_num_tokens: int | None = (
        None  # >= 1 tokens drafted from the sequence itself, checked in one run; None = off
    )
    max_matching_ngram_size: int | None = None  # >= 1, the longest n-gram looked up to draft; None = 2 (transformers)

    def __post_init__(self) -> None:
        for f in fields(self):  # numpy scalars (np.int64(5), np.float32(0.7)) count as the Python values they hold
            object.__setattr__(self, f.name, _plain(getattr(self, f.name)))
        eos = self.eos_token_id
        if eos is None:
            eos = ()
        elif _is_int(eos):
            eos = (eos,)
        elif isinstance(eos, (list, tuple)) and all(_is_int(e) and e >= 0 for e in eos):
            eos = tuple(int(e) for e in eos)
        else:
            raise UsageError(f"eos_token_id must be a token id or a list of token ids, got {self.eos_token_id!r}")
        object.__setattr__(self, "eos_token_id", eos)

        _check_int(self, "max_new_tokens", 1, optional=True)
        _check_int(self, "max_length", 1, optional=True)
        _check_int(self, "default_new_tokens", 1)
        _check_int(self, "min_new_tokens", 0)
        _check_int(self, "min_length", 0)
        _check_bool(self, "do_sample")
        _check_float(self, "temperature", low=0.0, low_open=True)
        _check_int(self, "top_k", 0)
        _check_float(self, "top_p", low=0.0, low_open=True, high=1.0)
        _check_int(self, "seed", 0, optional=True)
        _check_int(self, "num_beams", 1)
        _check_float(self, "length_penalty")
        if not (isinstance(self.early_stopping, bool) or self.early_stopping == "never"):
            raise UsageError(f"early_stopping must be true, false or 'never', got {self.early_stopping!r}")
        _check_int(self, "num_return_sequences", 1)
        _check_int(self, "no_repeat_ngram_size", 0)
        _check_float(self, "repetition_penalty", low=0.0, low_open=True)
        _check_float(self, "presence_penalty", low=-2.0, high=2.0)
        _check_float(self, "frequency_penalty", low=-2.0, high=2.0)
        _check_int(self, "logprobs", 0, optional=True)
        _check_int(self, "prompt_lookup_num_tokens", 1, optional=True)
        _check_int(self, "max_matching_ngram_size", 1, optional=True)
        _check_int(self, "pad_token_id", 0, optional=True)
        _check_int(self, "forced_bos_token_id", 0, optional=True)
        _check_int(self, "decoder_start_token_id", 0, optional=True)
        _check_bool(self, "renormalize_logits")
        forced_eos = self.forced_eos_token_id
        if forced_eos is not None:
            forced_eos = (forced_eos,) if _is_int(forced_eos) else forced_eos
            if not (
                isinstance(forced_eos, (list, tuple)) and forced_eos and all(_is_int(e) and e >= 0 for e in forced_eos)
            ):
                raise UsageError(
                    f"forced_eos_token_id must be a token id or a list of ids, got {self.forced_eos_token_id!r}"
                )
            object.__setattr__(self, "forced_eos_token_id", tuple(forced_eos))
        if self.bad_words_ids is not None:
            words = self.bad_words_ids
            if not (
                isinstance(words, (list, tuple))
                and all(isinstance(w, (list, tuple)) and w and all(_is_int(t) and t >= 0 for t in w) for w in words)
            ):
                raise UsageError(f"bad_words_ids must be a list of non-empty lists of token ids, got {words!r}")
            object.__setattr__(self, "bad_words_ids", tuple(tuple(w) for w in words))
        _check_bool(self, "return_dict_in_generate")

        if self.do_sample and self.num_beams > 1:
            raise UsageError("do_sample with num_beams > 1 (beam sampling) is not supported; use one or the other")
        if self.logprobs is not None and self.num_beams > 1:
            raise UsageError("logprobs needs num_beams=1: beam search decides its tokens only at the end")
        if self.prompt_lookup_num_tokens is not None and self.num_beams > 1:
            raise UsageError(
                "prompt_lookup_num_tokens needs num_beams=1 (greedy or sampling); beam search cannot check drafted tokens"
            )
        if self.prompt_lookup_num_tokens is not None and self.num_return_sequences > 1:
            raise UsageError(
                f"num_return_sequences must be 1 with prompt_lookup_num_tokens (as transformers), got {self.num_return_sequences}"
            )
        if self.num_beams == 1 and not self.do_sample and self.num_return_sequences > 1:
            raise UsageError(
                f"num_return_sequences must be 1 for greedy search, got {self.num_return_sequences}; "
                "set num_beams >= num_return_sequences or do_sample=True"
            )
        if self.num_beams > 1 and self.num_return_sequences > self.num_beams:
            raise UsageError(
                f"num_return_sequences must be at most num_beams ({self.num_beams}), got {self.num_return_sequences}"
            )

    @classmethod
    def from_defaults(cls, defaults: dict[str, Any] | None = None, **overrides: Any) -> GenerationConfig:
        """Build a config from a model's defaults (unknown keys ignored) and the caller's overrides.

        Overrides whose value is None are treated as not given, so CLI flags left unset fall through.
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise UsageError(f"unknown generation option {unknown[0]!r}; known options: {', '.join(sorted(names))}")
        merged = {k: v for k, v in (defaults or {}).items() if k in names and v is not None}
        merged.update({k: v for k, v in overrides.items() if v is not None})
        # subtle: as in transformers, an explicit max_length with no max_new_tokens wins over a default max_new_tokens
        if overrides.get("max_length") is not None and overrides.get("max_new_tokens") is None:
            merged.pop("max_new_tokens", None)
        return cls(**merged)

    def replace(self, **changes: Any) -> GenerationConfig:
        return replace(self, **changes)

    def total_length(self, prompt_length: int) -> int:
        """The length (prompt included) at which generation stops."""
        if self.max_new_tokens is not None:
            return prompt_length + self.max_new_tokens
        if self.max_length is not None:
            return self.max_length
        return prompt_length + self.default_new_tokens

    def min_total_length(self, prompt_length: int) -> int:
        """The length (prompt included) before which EOS is banned.

        As transformers' `_prepare_generated_length`: min_new_tokens, when on, replaces min_length.
        """
        if self.min_new_tokens:
            return prompt_length + self.min_new_tokens
        return self.min_length

    @property
    def pad_id(self) -> int | None:
        if self.pad_token_id is not None:
            return self.pad_token_id
        return self.eos_token_id[0] if self.eos_token_id else None


def _plain(value: Any) -> Any:
    """`value` with numpy scalars, inside lists and tuples too, turned into Python bools, ints and floats."""
    if isinstance(value, np.generic) and isinstance(value, (np.bool_, np.integer, np.floating)):
        return value.item()
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(cfg: GenerationConfig, name: str, low: int, optional: bool = False) -> None:
    value = getattr(cfg, name)
    if value is None and optional:
        return
    if not _is_int(value):
        raise UsageError(f"{name} must be an integer >= {low}, got {value!r}")
    if value < low:
        raise UsageError(f"{name} must be >= {low}, got {value}")


def _check_bool(cfg: GenerationConfig, name: str) -> None:
    value = getattr(cfg, name)
    if not isinstance(value, bool):
        raise UsageError(f"{name} must be true or false, got {value!r}")


def _check_float(
    cfg: GenerationConfig, name: str, low: float | None = None, low_open: bool = False, high: float | None = None
) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UsageError(f"{name} must be a finite number, got {value!r}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and value > high
    if too_low or too_high:
        left = "(" if low_open else "["
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf)" if high is None else f"{high:g}]"
        raise UsageError(f"{name} must be in {left}{lo}, {hi}, got {value}")
