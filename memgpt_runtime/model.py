"""A loaded model: manifest, tokenizer and ONNX session(s), with `generate` and `generate_text`.

`generate` mirrors transformers' `generate()` on token ids (defaults from the model's generation config,
keyword options on top, the attention mask inferred from padding as transformers infers it); `generate_steps`
is the same generation one model step at a time; `generate_text` wraps them with tokenization, chat templates
and streaming. An encoder-decoder model takes its input as the source: the encoder runs once, and the decoder
starts from its start token, as transformers does. The search itself is in `search.py`/`beam.py`.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np

from .config import GenerationConfig
from .encoder import CrossAttention, EncoderSession
from .errors import UsageError
from .inputs import attention_matrix, check_config_tokens, token_rows
from .manifest import Manifest, read_manifest
from .request import Done, GenerateResult, Request, Step
from .search import finish, search
from .session import DecoderSession, check_threads, default_threads
from .state import DecoderState
from .stream import TextStream
from .tokenizer import Tokenizer, pad


def load(folder: str | Path, threads: int | None = None, batch_invariant: bool = False) -> LanguageModel:
    """Load an exported folder: read its manifest, open its tokenizer and its ONNX Runtime session.

    `batch_invariant=True`: every answer is the same bits whatever ran beside it in a batch (the engine, the server),
    at a cost for models whose kernels compute a lone row differently (int4: a scratch row beside it, docs/engine.md).
    """
    threads = check_threads(threads) if threads is not None else default_threads()
    if not isinstance(folder, (str, os.PathLike)):
        raise UsageError(f"load() takes the path of an exported folder, got {type(folder).__name__}")
    folder = Path(folder)
    manifest = read_manifest(folder)
    tokenizer = Tokenizer(folder / manifest.tokenizer_file, manifest.tokens, manifest.chat_template)
    session = DecoderSession.from_manifest(folder, manifest, threads, batch_invariant)
    encoder = EncoderSession.from_manifest(folder, manifest, threads) if manifest.encoder else None
    return LanguageModel(folder, manifest, tokenizer, session, encoder)


class LanguageModel:
    def __init__(
        self,
        folder: Path,
        manifest: Manifest,
        tokenizer: Tokenizer,
        session: DecoderSession,
        encoder: EncoderSession | None = None,
    ):
        self.folder = folder
        self.manifest = manifest
        self.tokenizer = tokenizer
        self.session = session
        self.encoder = encoder  # None for decoder-only models

    def generation_config(self, **options: Any) -> GenerationConfig:
        """The model's generation defaults with `options` on top, validated."""
        defaults = dict(self.manifest.generation_defaults)
        defaults.setdefault("eos_token_id", list(self.manifest.tokens.eos_token_ids))
        defaults.setdefault("pad_token_id", self.manifest.tokens.pad_token_id)
        defaults.setdefault("decoder_start_token_id", self.manifest.tokens.decoder_start_token_id)
        config = GenerationConfig.from_defaults(defaults, **options)
        check_config_tokens(config, self.manifest.vocab_size)
        return config

    def generate(self, input_ids, attention_mask=None, **options: Any) -> np.ndarray | GenerateResult:
        """Token ids in, (batch * num_return_sequences, prompt + new) int64 ids out, prompt included.

        `input_ids`: a list of ids, a list of lists (padded here) or a (batch, length) array. Decoder-only
        models continue them (lists are left-padded); encoder-decoder models read them as the source (lists
        are right-padded) and return decoder ids that start with the decoder start token, as transformers does.
        With `return_dict_in_generate=True` returns a GenerateResult with `sequences_scores` for beam search
        and the `lengths` of the rows' new tokens.
        """
        request, state = self._start(input_ids, attention_mask, options)
        result = finish(search(state, request))
        return result if request.config.return_dict_in_generate else result.sequences

    def generate_steps(self, input_ids, attention_mask=None, **options: Any) -> Generator[Step | Done, None, None]:
        """`generate` one model call per `next()`: a `Step` after each (with each row's token, except in beam
        search), then `Done` with the GenerateResult. Closing the iterator stops generation.

        Options are checked and the cache is allocated now, so bad input fails here rather than at `next()`.
        """
        request, state = self._start(input_ids, attention_mask, options)
        return search(state, request)

    def _start(self, input_ids, attention_mask, options: dict[str, Any]) -> tuple[Request, DecoderState]:
        """Resolve a call into a `Request` and a fresh cache."""
        request, cross = self.resolve(input_ids, attention_mask, **options)
        return request, self.new_state(request, cross)

    def new_state(self, request: Request, cross: CrossAttention | None = None) -> DecoderState:
        """A cache that holds `request` to its end (the encoder's `cross` attention for an encoder-decoder)."""
        return self.session.new_state(request.cache_rows, request.max_length, cross=cross)

    def resolve(self, input_ids, attention_mask=None, **options: Any) -> tuple[Request, CrossAttention | None]:
        """A call's `Request` (ids, mask, a config with a concrete max_length, rng), checked, and for an
        encoder-decoder model the encoder's cross attention of its sources (the encoder runs here)."""
        config = self.generation_config(**options)
        graph = self.manifest.graph
        if (
            config.prompt_lookup_num_tokens is not None
            and self.manifest.kv_cache.layout == "shared"
            and graph.all_positions is None
        ):
            raise UsageError(
                "prompt_lookup_num_tokens needs a graph that returns the logits of every position; "
                "re-export the model with this version of memgpt export"
            )
        cross = None
        if self.encoder is None:
            ids, mask = self._prepare_inputs(input_ids, attention_mask, config, side="left")
        else:
            source, source_mask = self._prepare_inputs(input_ids, attention_mask, config, side="right")
            cross = CrossAttention(
                self.manifest.graph,
                self.manifest.kv_cache.num_layers,
                self.encoder.encode(source, source_mask),
                source_mask,
            )
            ids, mask = self._decoder_start(len(source), config)
        rng = np.random.default_rng(config.seed) if config.do_sample else None
        free = 1
        if config.prompt_lookup_num_tokens is not None and self.manifest.kv_cache.layout == "shared":
            free = self.session.min_rows  # a check of that many positions costs what a plain step does
        return Request.resolve(ids, mask, config, rng, self.manifest.context_length, free), cross

    def _decoder_start(self, rows: int, config: GenerationConfig) -> tuple[np.ndarray, np.ndarray]:
        """The decoder's prompt of an encoder-decoder model: its start token in every row (ids, mask)."""
        start = config.decoder_start_token_id
        if start is None:
            raise UsageError("the model declares no decoder_start_token_id; pass decoder_start_token_id=ID")
        if start >= self.manifest.vocab_size:
            raise UsageError(f"decoder_start_token_id must be in [0, {self.manifest.vocab_size}), got {start}")
        return np.full((rows, 1), start, np.int64), np.ones((rows, 1), np.int64)

    def _prepare_inputs(
        self, input_ids, attention_mask, config: GenerationConfig, side: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """(batch, length) int64 ids and mask from the caller's ids; lists of lists are padded on `side`."""
        pad_id = config.pad_id if config.pad_id is not None else 0
        rows = token_rows(input_ids, self.manifest.vocab_size)
        if isinstance(rows, np.ndarray):
            ids = rows
        else:
            ids, inferred = pad(rows, pad_id, side)
            if attention_mask is None and len({len(r) for r in rows}) > 1:
                attention_mask = inferred
        if attention_mask is None:
            # as transformers `_prepare_attention_mask_for_generation`: padding is masked unless pad is an EOS id
            if config.pad_token_id is not None and config.pad_token_id not in config.eos_token_id:
                mask = (ids != config.pad_token_id).astype(np.int64)
            else:
                mask = np.ones_like(ids)
        else:
            mask = attention_matrix(attention_mask, ids.shape)
        if side == "left" and not mask[:, -1].all():
            raise UsageError("prompts must be left-padded: the attention mask's last column must be all 1")
        if not mask.any(axis=1).all():
            raise UsageError("a row of the attention mask is all 0; give every input at least one real token")
        return ids, mask

    def new_tokens(self, sequences: np.ndarray, prompt_width: int) -> np.ndarray:
        """The generated part of `generate`'s output: after the padded prompt, or after the decoder start token."""
        return sequences[:, 1 if self.encoder else prompt_width :]

    def logits(self, input_ids) -> np.ndarray:
        """(batch, seq, vocab) float32 logits at every position of `input_ids` (a list of ids, equal-length lists or
        a (batch, seq) array), each row read from its first token: for scoring, reranking, perplexity."""
        from .scoring import sequence_logits

        return sequence_logits(self.session, self.manifest, input_ids)

    # -- text in, text out ---------------------------------------------------------------------------------

    def encode_prompt(self, prompt: str | list[dict[str, Any]], chat: bool = False) -> list[int]:
        """A prompt's ids: a plain string, or a user turn (or a whole conversation) through the chat template."""
        if isinstance(prompt, list):
            if not prompt:
                raise UsageError(
                    "the prompt is an empty list; give a string, a list of strings or a list of chat messages"
                )
            return self.tokenizer.apply_chat_template(prompt, add_generation_prompt=True)
        if not isinstance(prompt, str):
            raise UsageError(
                f"the prompt must be a string (or, for chat, a list of messages), got {type(prompt).__name__}"
            )
        if not prompt.strip():
            raise UsageError("the prompt is empty; give some text to continue")
        if chat:
            return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
        return self.tokenizer.encode(prompt)

    def generate_text(self, prompt, chat: bool = False, stream: bool = False, **options: Any):
        """Text in, the generated continuation out (special tokens dropped).

        `prompt`: a string; a list of strings (a batch, returns a list); or, for chat, a list of
        {"role", "content"} messages. With stream=True returns a generator of text pieces (one prompt only)
        that returns the GenerateResult (StopIteration.value); closing it early stops generation.
        """
        batch = isinstance(prompt, list) and all(isinstance(p, str) for p in prompt) and len(prompt) > 0
        if isinstance(prompt, list) and not batch and any(isinstance(p, str) for p in prompt):
            kinds = ", ".join(sorted({type(p).__name__ for p in prompt}))
            raise UsageError(f"a batch of prompts must be all strings, got a list of {kinds}")
        prompts = prompt if batch else [prompt]
        rows = [self.encode_prompt(p, chat) for p in prompts]
        if stream:
            if batch:
                raise UsageError("stream=True takes one prompt, got a list")
            return self._stream(rows[0], options)
        out = self.generate(rows, **options)
        sequences = out.sequences if isinstance(out, GenerateResult) else out
        texts = self.tokenizer.batch_decode(
            self.new_tokens(sequences, max(len(r) for r in rows)), skip_special_tokens=True
        )
        return texts if batch or len(texts) > 1 else texts[0]

    def _stream(self, ids: list[int], options: dict[str, Any]) -> Generator[str, None, GenerateResult]:
        config = self.generation_config(**options)
        if config.num_beams > 1 or config.num_return_sequences > 1:
            raise UsageError("streaming needs num_beams=1 and num_return_sequences=1; beam search decides at the end")
        return _text_pieces(self.generate_steps([ids], **options), TextStream(self.tokenizer))


def _text_pieces(steps: Generator[Step | Done, None, None], text: TextStream) -> Generator[str, None, GenerateResult]:
    """The text of row 0's tokens as it becomes final, then the GenerateResult as the return value.

    Closing this generator closes `steps`, so the model makes no further call.
    """
    try:
        for event in steps:
            if isinstance(event, Done):
                result = event.result
            elif event.live[0]:
                piece = text.push([int(event.tokens[0])])
                if piece:
                    yield piece
    finally:
        steps.close()
    tail = text.flush()
    if tail:
        yield tail
    return result
